#!/usr/bin/env bash
# Issue 15's bench: the cost of shared dedupe on Redis, and one replica vs two behind
# HAProxy, in one run on loopback (wrk -t1, c64, a fresh delivery id per request from
# bench/wrk-push.py, so every request is a new event: a local miss, a Redis claim and commit).
# Variants, interleaved for ROUNDS rounds (log = discard, so verify + dedupe is what is
# measured, without a broker sharing the 2 cores):
#   local       1 hookgate, local dedupe, wrk direct
#   redis       1 hookgate, [dedupe.redis], wrk direct
#   haproxy-1   1 hookgate with Redis behind HAProxy (round robin, keep-alive to the server)
#   haproxy-2   2 hookgates with Redis behind HAProxy
# Per run: req/s, p99, the CPU per answered request of hookgate (summed over replicas),
# redis-server and HAProxy (utime+stime from /proc), Redis commands per request (INFO
# commandstats) and, at the end, Redis memory per committed key.
#   bench/redis-ab.sh [ROUNDS] [BIN]     (defaults 3, target/release/hookgate)
# Needs redis-server, haproxy, wrk. Loopback only; stops by itself.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
BIN=${2:-target/release/hookgate}
DUR=${DUR:-8s} CONNS=${CONNS:-64}
TICK=$(getconf CLK_TCK)
OUT=$(mktemp -d /tmp/redis-ab.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done; }
trap cleanup EXIT
python3 bench/wrk-push.py "$OUT/push.lua"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  >"$OUT/redis.log" 2>&1 &
REDIS=$!; PIDS+=("$REDIS")
for _ in $(seq 1 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
export HOOKGATE_BENCH_REDIS="redis://127.0.0.1:$RPORT/0"
rcalls() { redis-cli -p "$RPORT" info commandstats | awk -F'[=,:]' '/^cmdstat_/ {s += $3} END {print s + 0}'; }

start_hg() { # tag config -> pid addr on fd: writes $OUT/$tag.addr
  local tag=$1 cfg=$2
  env HOOKGATE__BENCH__DISCARD=true HOOKGATE_BENCH_SPOOL="$OUT/spool-$tag" \
    "$BIN" serve --config "$cfg" >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
  local pid=$!; PIDS+=("$pid")
  local addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^listening on //p' "$OUT/$tag.out" 2>/dev/null | head -n1); [ -n "$addr" ] && break; sleep 0.1
  done
  echo "$pid $addr"
}

start_haproxy() { # tag backends... -> pid addr
  local tag=$1; shift
  local port; port=$(free_port)
  {
    printf 'global\n    maxconn 4096\n    nbthread 1\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n    option http-keep-alive\n'
    printf 'frontend f\n    bind 127.0.0.1:%s\n    default_backend b\nbackend b\n    balance roundrobin\n' "$port"
    local i=0; for b in "$@"; do i=$((i + 1)); printf '    server s%s %s\n' "$i" "$b"; done
  } >"$OUT/$tag.haproxy.cfg"
  haproxy -f "$OUT/$tag.haproxy.cfg" -db >"$OUT/$tag.haproxy.log" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  echo "$pid 127.0.0.1:$port"
}

one() {
  local variant=$1 tag=$2
  local hgs=() target="" hap="" cfg=bench/configs/discard-redis.toml n=1
  case $variant in
    local) cfg=bench/configs/spool.toml ;;
    redis) ;;
    haproxy-1) ;;
    haproxy-2) n=2 ;;
  esac
  local addrs=()
  for i in $(seq 1 $n); do
    read -r pid addr < <(start_hg "$tag.$i" "$cfg")
    [ -z "$addr" ] && { echo "$tag: hookgate did not start" >&2; tail -5 "$OUT/$tag.$i.err" >&2; return; }
    hgs+=("$pid"); addrs+=("$addr")
  done
  target=${addrs[0]}
  if [[ $variant == haproxy-* ]]; then
    read -r hap target < <(start_haproxy "$tag" "${addrs[@]}")
  fi
  wrk -t1 -c"$CONNS" -d1s -s "$OUT/push.lua" "http://$target" >/dev/null 2>&1
  local t0 t1 r0 r1 h0=0 h1=0 k0 k1
  t0=$(ticks "${hgs[@]}"); r0=$(ticks "$REDIS"); [ -n "$hap" ] && h0=$(ticks "$hap"); k0=$(rcalls)
  wrk -t1 -c"$CONNS" -d"$DUR" --latency -s "$OUT/push.lua" "http://$target" >"$OUT/$tag.wrk" 2>&1
  t1=$(ticks "${hgs[@]}"); r1=$(ticks "$REDIS"); [ -n "$hap" ] && h1=$(ticks "$hap"); k1=$(rcalls)
  python3 - "$tag" "$variant" "$OUT/$tag.wrk" "$t0" "$t1" "$r0" "$r1" "$h0" "$h1" "$k0" "$k1" "$TICK" <<'PY' | tee -a "$OUT/summary.txt"
import re, sys
tag, variant, wrk, t0, t1, r0, r1, h0, h1, k0, k1, tick = sys.argv[1:]
w = open(wrk).read()
req = int(re.search(r"(\d+) requests in", w).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1))
p99 = re.search(r"\s99%\s+(\S+)", w).group(1)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", w)
err = re.search(r"Socket errors: (.*)", w)
us = lambda a, b: (int(b) - int(a)) / int(tick) * 1e6 / max(req, 1)
flag = " BAD: " + (bad.group(0) if bad else "") + (err.group(0) if err else "") if (bad or err) else ""
print(f"{tag:8s} {variant:10s} req/s {rps:8.0f}  p99 {p99:>8s}  hookgate {us(t0, t1):6.2f} us/req  "
      f"redis {us(r0, r1):5.2f} us/req  haproxy {us(h0, h1):5.2f} us/req  "
      f"redis cmds/req {(int(k1) - int(k0)) / max(req, 1):.2f}{flag}")
PY
  for p in "${hgs[@]}" $hap; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$OUT"/spool-"$tag".*
}

for r in $(seq 1 "$ROUNDS"); do
  for v in local redis haproxy-1 haproxy-2; do one "$v" "$v.r$r"; done
done
keys=$(redis-cli -p "$RPORT" dbsize)
mem=$(redis-cli -p "$RPORT" info memory | awk -F: '/^used_memory:/ {print $2+0}')
echo "redis: $keys keys, used_memory $mem bytes, $(python3 -c "print(round($mem / max($keys, 1)))") bytes per key (all keys are committed ids with their TTL)" | tee -a "$OUT/summary.txt"
echo "raw results: $OUT"
