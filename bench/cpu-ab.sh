#!/usr/bin/env bash
# CPU per event of servers under wrk (one thread, closed loop, fresh delivery id per request,
# bench/wrk-push.py), interleaved for ROUNDS rounds so drift on a shared machine hits every
# variant alike. Per run: req/s, p99, the server's CPU per answered request (utime+stime of
# the whole process from /proc: every thread, librdkafka's included), voluntary and
# involuntary context switches per request (summed over its threads), and the broker's CPU
# per request. Each variant is MODE:BINARY[:CONFIG]:
#   kafka:BIN[:CFG]   hookgate into a fresh Tansu broker (default bench/configs/kafka.toml)
#   discard:BIN       hookgate, bench/configs/spool.toml with HOOKGATE__BENCH__DISCARD=true
#   bare:BIN          bare-hyper
#   barekafka:BIN     bare-hyper --kafka into a fresh Tansu broker (hookgate's producer, no
#                     verify/dedupe/routing: the ceiling of hyper + librdkafka)
#
#   bench/cpu-ab.sh ROUNDS VARIANT...
#   WORKERS=1 DUR=8s CONNS=64 bench/cpu-ab.sh 3 discard:old/hookgate discard:new/hookgate
# WORKERS sets hookgate's TOKIO_WORKER_THREADS and bare-hyper's --threads. A run with any
# non-2xx answer or socket error is marked BAD. Loopback only; stops by itself.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=$1; shift
DUR=${DUR:-8s} CONNS=${CONNS:-64} WORKERS=${WORKERS:-}
TANSU=${HOOKGATE_TANSU:-$HOME/.cargo/bin/tansu}
TICK=$(getconf CLK_TCK)
OUT=$(mktemp -d /tmp/cpu-ab.XXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done' EXIT
python3 bench/wrk-push.py "$OUT/push.lua"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
csw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/ {v+=$2} /^nonvoluntary_ctxt/ {n+=$2} END {print v, n}'; }

one() {
  local variant=$1 tag=$2
  local mode bin config
  IFS=: read -r mode bin config <<<"$variant"
  local tansu="" port srv addr
  local env=()
  [ -n "$WORKERS" ] && env+=(TOKIO_WORKER_THREADS="$WORKERS")
  case $mode in
    kafka|barekafka)
      port=$(free_port)
      "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ >/dev/null 2>>"$OUT/tansu.stderr" &
      tansu=$!; PIDS+=("$tansu")
      for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
      if [ "$mode" = barekafka ]; then
        "$bin" --listen 127.0.0.1:0 ${WORKERS:+--threads "$WORKERS"} --kafka "127.0.0.1:$port" \
          --topic "cpu-ab.$tag" >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
      else
        env HOOKGATE_BENCH_BROKERS="127.0.0.1:$port" HOOKGATE_BENCH_TOPIC="cpu-ab.$tag" "${env[@]}" \
          "$bin" serve --config "${config:-bench/configs/kafka.toml}" >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
      fi ;;
    discard)
      env HOOKGATE__BENCH__DISCARD=true HOOKGATE_BENCH_SPOOL="$OUT/spool-$tag" "${env[@]}" \
        "$bin" serve --config "${config:-bench/configs/spool.toml}" >"$OUT/$tag.out" 2>"$OUT/$tag.err" & ;;
    bare)
      "$bin" --listen 127.0.0.1:0 ${WORKERS:+--threads "$WORKERS"} >"$OUT/$tag.out" 2>"$OUT/$tag.err" & ;;
    *) echo "unknown mode in $variant" >&2; exit 2 ;;
  esac
  srv=$!; PIDS+=("$srv")
  addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^listening on //p' "$OUT/$tag.out" 2>/dev/null | head -n1); [ -n "$addr" ] && break; sleep 0.1
  done
  if [ -z "$addr" ]; then echo "$tag: did not start" >&2; tail -5 "$OUT/$tag.err" >&2; return; fi
  # Warm-up: connections, the topic's metadata, the producer id.
  wrk -t1 -c"$CONNS" -d1s -s "$OUT/push.lua" "http://$addr" >/dev/null 2>&1
  local t0 c0 b0=0 t1 c1 b1=0
  t0=$(ticks "$srv"); c0=$(csw "$srv"); [ -n "$tansu" ] && b0=$(ticks "$tansu")
  wrk -t1 -c"$CONNS" -d"$DUR" --latency -s "$OUT/push.lua" "http://$addr" >"$OUT/$tag.wrk" 2>&1
  t1=$(ticks "$srv"); c1=$(csw "$srv"); [ -n "$tansu" ] && b1=$(ticks "$tansu")
  python3 - "$tag" "$variant" "$OUT/$tag.wrk" "$t0" "$t1" "$c0" "$c1" "$b0" "$b1" "$TICK" <<'PY' | tee -a "$OUT/summary.txt"
import re, sys
tag, variant, wrk, t0, t1, c0, c1, b0, b1, tick = sys.argv[1:]
w = open(wrk).read()
req = int(re.search(r"(\d+) requests in", w).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1))
p99 = re.search(r"\s99%\s+(\S+)", w).group(1)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", w)
err = re.search(r"Socket errors: (.*)", w)
v0, n0 = map(int, c0.split()); v1, n1 = map(int, c1.split())
tick = int(tick)
us = lambda a, b: (int(b) - int(a)) / tick * 1e6 / max(req, 1)
flag = " BAD: " + (bad.group(0) if bad else "") + (err.group(0) if err else "") if (bad or err) else ""
print(f"{tag:10s} {variant:50s} req/s {rps:9.0f}  p99 {p99:>8s}  server {us(t0, t1):6.2f} us/req  "
      f"vcsw {(v1 - v0) / req:.3f}  ivcsw {(n1 - n0) / req:.3f}  broker {us(b0, b1):6.2f} us/req{flag}")
PY
  kill -TERM "$srv" 2>/dev/null; wait "$srv" 2>/dev/null
  if [ -n "$tansu" ]; then kill -KILL "$tansu" 2>/dev/null; wait "$tansu" 2>/dev/null; fi
  rm -rf "$OUT/spool-$tag"
}

for r in $(seq 1 "$ROUNDS"); do
  i=0
  for v in "$@"; do i=$((i + 1)); one "$v" "v$i.r$r"; done
done
echo "raw results: $OUT"
