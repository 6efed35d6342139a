#!/usr/bin/env bash
# hookgate's CPU per event against the rate (deploy/CAPACITY.md section 1): open loop at
# fixed rates into Kafka (Tansu), hookgate pinned to CPU 0, Tansu and the generator to CPU 1,
# a fresh broker and server per rate. Prints a table of rate, achieved req/s, p99 and the
# CPU µs per event of hookgate and Tansu (utime+stime over the measured window, from /proc,
# as hookgate-load's --cpu reports them).
#   bench/openloop-curve.sh [RATES]        (default "1000 4000 8000 12000 16000")
# Needs the release binaries and Tansu ($TANSU, default ~/.cargo/bin/tansu).
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${1:-1000 4000 8000 12000 16000}
BIN=${HOOKGATE_BENCH_BIN:-target/release}
TANSU=${TANSU:-$HOME/.cargo/bin/tansu}
DURATION=${DURATION:-10s}
OUT=target/hookgate-bench/openloop-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs to pin hookgate apart from the broker" >&2; exit 2; }
. bench/lib.sh
echo "| rate/s | achieved req/s | p99 ms | hookgate CPU µs/event | Tansu CPU µs/event | hookgate cores busy |" | tee "$OUT/table.md"
echo "|---:|---:|---:|---:|---:|---:|" | tee -a "$OUT/table.md"
for rate in $RATES; do
  KPORT=$(free_port)
  export HOOKGATE_BENCH_BROKERS=127.0.0.1:$KPORT HOOKGATE_BENCH_TOPIC=bench.open$rate
  taskset -c 1 "$TANSU" broker --listener-url "tcp://$HOOKGATE_BENCH_BROKERS" \
    --advertised-listener-url "tcp://$HOOKGATE_BENCH_BROKERS" --storage-engine memory://tansu/ \
    >"$OUT/tansu-$rate.log" 2>&1 &
  TP=$!; PIDS+=($TP)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break; sleep 0.1; done
  : >"$OUT/hg-$rate.stdout"
  taskset -c 0 "$BIN/hookgate" serve --config bench/configs/kafka.toml >"$OUT/hg-$rate.stdout" 2>"$OUT/hg-$rate.stderr" &
  HP=$!; PIDS+=($HP)
  ADDR=""
  for _ in $(seq 1 300); do ADDR=$(sed -n 's/^listening on //p' "$OUT/hg-$rate.stdout" | head -n1); [ -n "$ADDR" ] && break; sleep 0.1; done
  [ -n "$ADDR" ] || { echo "hookgate did not start" >&2; exit 1; }
  taskset -c 1 "$BIN/hookgate-load" --url "http://$ADDR/hooks/github" --mode open --rate "$rate" \
    --connections 256 --duration "$DURATION" --warmup 2s --label "open-$rate" --json "$OUT/open-$rate.json" \
    --cpu "hookgate=$HP" --cpu "tansu=$TP" --verify-kafka "$HOOKGATE_BENCH_BROKERS" \
    --topic "$HOOKGATE_BENCH_TOPIC" --verify-nudge >"$OUT/open-$rate.txt" || true
  python3 - "$OUT/open-$rate.json" "$rate" <<'PY' | tee -a "$OUT/table.md"
import json, sys
j = json.load(open(sys.argv[1]))
cpu = {c["name"]: c for c in j.get("cpu", [])}
lat = j.get("latency_us", {})
p99 = lat.get("p99", 0) / 1000
hg, ta = cpu.get("hookgate", {}), cpu.get("tansu", {})
busy = hg.get("us_per_event", 0) * j["rps"] / 1e6
print(f"| {int(sys.argv[2]):,} | {j['rps']:,.0f} | {p99:.2f} | {hg.get('us_per_event', 0):.1f} | {ta.get('us_per_event', 0):.1f} | {busy:.2f} |")
PY
  kill -TERM "$HP"; wait "$HP" 2>/dev/null || true
  kill -TERM "$TP"; wait "$TP" 2>/dev/null || true
done
echo "raw: $OUT"
