#!/usr/bin/env bash
# Issue 17's bench: ingest with the web console open and polling vs closed, same run.
# hookgate with the spool as the log (fsync group commit) and the console on
# (bench/configs/spool-console.toml); wrk -t1 c64 posts fresh deliveries (bench/wrk-push.py).
# Variants, interleaved for ROUNDS rounds, each a fresh hookgate:
#   closed   nobody polls the admin API
#   open     bench/console-poll.py polls it as TABS open console tabs do (every page's API
#            call every INTERVAL s, and the newest event opened: a read back from the spool)
# Per run: req/s, p99, hookgate CPU per answered request, console requests made/failed.
#   bench/console-ab.sh [ROUNDS] [BIN] [TABS] [INTERVAL]   (defaults 3, target/release/hookgate, 4, 1)
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; BIN=${2:-target/release/hookgate}; TABS=${3:-4}; INTERVAL=${4:-1}
DUR=${DUR:-8} CONNS=${CONNS:-64}
TICK=$(getconf CLK_TCK)
OUT=$(mktemp -d /tmp/console-ab.XXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done' EXIT
python3 bench/wrk-push.py "$OUT/push.lua"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
export HOOKGATE_ADMIN_TOKEN=bench-console-token-0123456789

one() {
  local variant=$1 tag=$2 admin
  admin="127.0.0.1:$(free_port)"
  env HOOKGATE_BENCH_SPOOL="$OUT/spool-$tag" HOOKGATE_BENCH_ADMIN="$admin" \
    "$BIN" serve --config bench/configs/spool-console.toml >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
  local srv=$!; PIDS+=("$srv")
  local addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^listening on //p' "$OUT/$tag.out" 2>/dev/null | head -n1); [ -n "$addr" ] && break; sleep 0.1
  done
  [ -z "$addr" ] && { echo "$tag: did not start" >&2; tail -5 "$OUT/$tag.err" >&2; return; }
  wrk -t1 -c"$CONNS" -d1s -s "$OUT/push.lua" "http://$addr" >/dev/null 2>&1
  local poll=""
  if [ "$variant" = open ]; then
    bench/console-poll.py "$admin" "$TABS" "$((DUR + 1))" "$INTERVAL" >"$OUT/$tag.poll" 2>&1 &
    poll=$!; PIDS+=("$poll")
  fi
  local t0 t1
  t0=$(ticks "$srv")
  wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "$OUT/push.lua" "http://$addr" >"$OUT/$tag.wrk" 2>&1
  t1=$(ticks "$srv")
  [ -n "$poll" ] && wait "$poll"
  python3 - "$tag" "$variant" "$OUT/$tag.wrk" "$t0" "$t1" "$TICK" "$OUT/$tag.poll" <<'PY' | tee -a "$OUT/summary.txt"
import os, re, sys
tag, variant, wrk, t0, t1, tick, poll = sys.argv[1:]
w = open(wrk).read()
req = int(re.search(r"(\d+) requests in", w).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1))
p99 = re.search(r"\s99%\s+(\S+)", w).group(1)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", w)
p = open(poll).read().strip().replace("\n", "; ") if os.path.exists(poll) else "-"
us = (int(t1) - int(t0)) / int(tick) * 1e6 / max(req, 1)
print(f"{tag:10s} {variant:6s} req/s {rps:8.0f}  p99 {p99:>8s}  hookgate {us:6.2f} us/req  console: {p}" + (" BAD " + bad.group(0) if bad else ""))
PY
  kill -TERM "$srv" 2>/dev/null; wait "$srv" 2>/dev/null
  rm -rf "$OUT/spool-$tag"
}

for r in $(seq 1 "$ROUNDS"); do
  for v in closed open; do one "$v" "$v.r$r"; done
done
echo "raw results: $OUT"
