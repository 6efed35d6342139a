#!/usr/bin/env bash
# How much plain per-request CPU work bare hyper can take before it drops under 85% of its
# own req/s (issue 16's discard budget), at 1 and 2 workers: bare-hyper --work W (a spin
# after reading the body) under wrk -t1 -c64, fresh delivery ids (bench/wrk-push.py),
# WORKS interleaved for ROUNDS rounds. Prints req/s, CPU µs per request (utime+stime of the
# server from /proc over the run), p99, and each as a ratio of --work 0 in the same round.
#   bench/work-sweep.sh [ROUNDS] [WORKS]     (default 2 "0 250ns 500ns 1us 2us")
#   WORKERS="1 2" DUR=6s bench/work-sweep.sh
# Needs target/release/bare-hyper and wrk. Loopback only; stops by itself.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
WORKS=${2:-0 250ns 500ns 1us 2us}
WORKERS=${WORKERS:-1 2} DUR=${DUR:-6s}
BIN=${HOOKGATE_BENCH_BIN:-target/release}
TICK=$(getconf CLK_TCK)
. bench/lib.sh
OUT=$(mktemp -d /tmp/work-sweep.XXXX)
python3 bench/wrk-push.py "$OUT/push.lua" >/dev/null
echo "| workers | --work | round | req/s | vs --work 0 | server CPU µs/req | vs --work 0 | p99 ms |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  for w in $WORKERS; do
    base_rps="" base_cpu=""
    for work in $WORKS; do
      : >"$OUT/out"
      "$BIN/bare-hyper" --listen 127.0.0.1:0 --threads "$w" --work "$work" --exit-after 120 >"$OUT/out" 2>/dev/null &
      srv=$!; PIDS+=("$srv")
      addr=""
      for _ in $(seq 1 100); do addr=$(sed -n 's/^listening on //p' "$OUT/out" | head -n1); [ -n "$addr" ] && break; sleep 0.1; done
      [ -n "$addr" ] || { echo "bare-hyper did not start" >&2; exit 1; }
      wrk -t1 -c64 -d1s -s "$OUT/push.lua" "http://$addr" >/dev/null 2>&1
      t0=$(cpu_ticks "$srv")
      wrk -t1 -c64 -d"$DUR" --latency -s "$OUT/push.lua" "http://$addr" >"$OUT/wrk" 2>&1
      t1=$(cpu_ticks "$srv")
      kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null
      python3 - "$OUT/wrk" "$w" "$work" "$r" "$((t1 - t0))" "$TICK" "$base_rps" "$base_cpu" >"$OUT/line" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
w, work, r, ticks, tick = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
reqs = int(re.search(r"(\d+) requests in", text)[1])
secs = float(re.search(r"requests in ([\d.]+)s", text)[1])
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
p99ms = float(p99[1]) * {"us": 0.001, "ms": 1, "s": 1000}[p99[2]]
rps, cpu = reqs / secs, ticks / tick / reqs * 1e6
base_rps = float(sys.argv[7]) if sys.argv[7] else rps
base_cpu = float(sys.argv[8]) if sys.argv[8] else cpu
print(f"| {w} | {work} | {r} | {rps:,.0f} | {rps / base_rps:.0%} | {cpu:.1f} | {cpu / base_cpu:.2f}× | {p99ms:.2f} |")
print(rps, cpu, file=sys.stderr)
PY
      cat "$OUT/line"
      if [ -z "$base_rps" ]; then
        read -r base_rps base_cpu < <(python3 - "$OUT/wrk" "$((t1 - t0))" "$TICK" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
reqs = int(re.search(r"(\d+) requests in", text)[1]); secs = float(re.search(r"requests in ([\d.]+)s", text)[1])
print(reqs / secs, int(sys.argv[2]) / int(sys.argv[3]) / reqs * 1e6)
PY
)
      fi
    done
  done
done
rm -rf "$OUT"
