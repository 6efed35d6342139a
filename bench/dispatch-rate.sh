#!/usr/bin/env bash
# A dispatcher's rate (deploy/CAPACITY.md, "Consumers"): one `hookgate dispatch` process
# draining N events from Kafka (Tansu) into an `http` sink that answers at once (bare-hyper),
# with the events/s, the dispatcher's CPU per event and the sink's, from /proc.
#   bench/dispatch-rate.sh [EVENTS] [PARTITIONS]      (defaults 20000 and 3)
# Needs the release binaries (cargo build --release -p hookgate-ingest --bin hookgate
# -p hookgate-bench --bins) and Tansu ($TANSU, default ~/.cargo/bin/tansu).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
PARTS=${2:-3}
BIN=${HOOKGATE_BENCH_BIN:-target/release}
TANSU=${TANSU:-$HOME/.cargo/bin/tansu}
OUT=target/hookgate-bench/dispatch-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
. bench/lib.sh
wait_line() { # FILE PREFIX — prints the rest of the first line starting with PREFIX
  for _ in $(seq 1 300); do
    local v; v=$(sed -n "s/^$2//p" "$1" | head -n1)
    [ -n "$v" ] && { echo "$v"; return 0; }
    sleep 0.1
  done
  echo "no '$2' in $1" >&2; return 1
}

KPORT=$(free_port)
export HOOKGATE_BENCH_BROKERS=127.0.0.1:$KPORT HOOKGATE_BENCH_TOPIC=bench.dispatch
"$TANSU" broker --listener-url "tcp://$HOOKGATE_BENCH_BROKERS" --advertised-listener-url "tcp://$HOOKGATE_BENCH_BROKERS" \
  --storage-engine memory://tansu/ >"$OUT/tansu.stdout" 2>"$OUT/tansu.stderr" &
PIDS+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break; sleep 0.1; done

# 1. N distinct events into the topic through hookgate serve.
# One record per batch: Tansu 0.6 answers a fetch that starts inside a record batch with
# the batches after it only (Kafka returns the batch holding the offset), so a consumer
# that pauses and resumes mid-batch, as the dispatcher does under backpressure, would skip
# records on this test broker (measured: 1,883-1,916 of 2,000 delivered with batched
# records, 2,000 of 2,000 without pausing). Real Kafka does not need this.
sed "s/^topic_partitions = .*/topic_partitions = $PARTS/" bench/configs/kafka.toml >"$OUT/serve.toml"
printf '\n[kafka.options]\n"batch.num.messages" = "1"\n' >>"$OUT/serve.toml"
: >"$OUT/serve.stdout"
"$BIN/hookgate" serve --config "$OUT/serve.toml" >"$OUT/serve.stdout" 2>"$OUT/serve.stderr" &
SERVE=$!; PIDS+=($SERVE)
ADDR=$(wait_line "$OUT/serve.stdout" "listening on ")
"$BIN/hookgate-load" --url "http://$ADDR/hooks/github" --requests "$N" --duration 600s --warmup 0s \
  --connections 32 --label fill --json "$OUT/fill.json" \
  --verify-kafka "$HOOKGATE_BENCH_BROKERS" --topic "$HOOKGATE_BENCH_TOPIC" --verify-nudge >"$OUT/fill.txt"
OK=$(jq -r '(.accepted // 0) - (.duplicates // 0)' "$OUT/fill.json")
kill -TERM "$SERVE"; wait "$SERVE" 2>/dev/null || true

# 2. The sink, and one dispatcher reading the topic from the start.
: >"$OUT/sink.stdout"
"$BIN/bare-hyper" --listen 127.0.0.1:0 --threads 1 --exit-after 900 >"$OUT/sink.stdout" 2>"$OUT/sink.stderr" &
SINK=$!; PIDS+=($SINK)
SINK_ADDR=$(wait_line "$OUT/sink.stdout" "listening on ")
APORT=$(free_port)
# DISPATCH_OPTIONS: extra librdkafka options for the dispatcher only, lines of
# `"name" = "value"` (they land in the [kafka.options] table the fill config ends with).
cat "$OUT/serve.toml" - >"$OUT/dispatch.toml" <<TOML
${DISPATCH_OPTIONS:-}

[admin]
listen = "127.0.0.1:$APORT"

[dispatch]
group_id = "bench-dispatch"
dlq_topic = "bench.dispatch.dlq"

[[sinks]]
name = "fast"
type = "http"
url = "http://$SINK_ADDR/"
allow_private = true

[[routes]]
source = "github"
sink = "fast"
TOML
: >"$OUT/dispatch.stdout"
T0=$(date +%s.%N)
"$BIN/hookgate" dispatch --config "$OUT/dispatch.toml" >"$OUT/dispatch.stdout" 2>"$OUT/dispatch.stderr" &
DISP=$!; PIDS+=($DISP)
S0=$(cpu_ticks "$SINK")
delivered() {
  curl -fsS "http://127.0.0.1:$APORT/metrics" 2>/dev/null \
    | awk '/^hookgate_sink_deliveries_total\{sink="fast",outcome="ok"\}/ {print $2}' | head -n1
}
FIRST="" DONE=0
for _ in $(seq 1 6000); do
  D=$(delivered || true); D=${D:-0}
  if [ -z "$FIRST" ] && [ "${D%.*}" -gt 0 ]; then FIRST=$(date +%s.%N); FD=$(cpu_ticks "$DISP"); FS=$(cpu_ticks "$SINK"); FN=${D%.*}; fi
  if [ "${D%.*}" -ge "$OK" ]; then DONE=1; break; fi
  sleep 0.1
done
T1=$(date +%s.%N); D1=$(cpu_ticks "$DISP"); S1=$(cpu_ticks "$SINK")
[ "$DONE" = 1 ] || { echo "the dispatcher delivered ${D:-0} of $OK within 10 minutes" >&2; exit 1; }
python3 - "$OK" "$FN" "$FIRST" "$T1" "$FD" "$D1" "$FS" "$S1" "$T0" "$PARTS" "$(getconf CLK_TCK)" <<'PY' | tee "$OUT/result.md"
import sys
ok, fn = int(sys.argv[1]), int(sys.argv[2])
first, t1, fd, d1, fs, s1, t0 = (float(x) for x in sys.argv[3:10])
parts, hz = int(sys.argv[10]), int(sys.argv[11])
n = ok - fn  # events delivered between the first delivery and the last (start-up excluded)
secs = t1 - first
print(f"| events | partitions | start-up s | events/s (steady) | dispatcher CPU µs/event | sink CPU µs/event |")
print(f"|---:|---:|---:|---:|---:|---:|")
print(f"| {ok} | {parts} | {first - t0:.1f} | {n / secs:,.0f} | {(d1 - fd) / hz / n * 1e6:.1f} | {(s1 - fs) / hz / n * 1e6:.1f} |")
PY
echo "raw: $OUT"
