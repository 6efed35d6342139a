#!/usr/bin/env bash
# Instructions per request of two hookgate binaries, counted by callgrind (repeatable on a
# busy machine, unlike seconds). Each binary serves the spool config under
# `valgrind --tool=callgrind` twice, once for N1 and once for N2 requests (hookgate-load,
# 4 connections, 1% re-sends); the difference of the two totals over N2 - N1 is the cost of
# one request, without start-up and shutdown.
#
#   bench/ir-ab.sh OLD_HOOKGATE NEW_HOOKGATE
#   CONFIG_A=old.toml CONFIG_B=new.toml bench/ir-ab.sh OLD NEW   (when the configs must differ)
#   CONFIG=bench/configs/kafka.toml bench/ir-ab.sh OLD NEW   (the Kafka path: one Tansu on
#   loopback for all four runs; the count covers every hookgate thread, librdkafka's too)
# Loopback only; stops by itself. Needs valgrind and hookgate-load (release).
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2
LOADGEN=${HOOKGATE_LOAD:-target/release/hookgate-load}
CONFIG=${CONFIG:-bench/configs/spool.toml}
CONFIG_A=${CONFIG_A:-$CONFIG} CONFIG_B=${CONFIG_B:-$CONFIG}
N1=${N1:-500} N2=${N2:-2500}
OUT=$(mktemp -d /tmp/ir-ab.XXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done' EXIT
if grep -q '^\[kafka\]' "$CONFIG_A" "$CONFIG_B" && [ -z "${HOOKGATE_BENCH_BROKERS:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${HOOKGATE_TANSU:-$HOME/.cargo/bin/tansu}" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ >/dev/null 2>"$OUT/tansu.stderr" &
  PIDS+=("$!")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  export HOOKGATE_BENCH_BROKERS="127.0.0.1:$port" HOOKGATE_BENCH_TOPIC="${HOOKGATE_BENCH_TOPIC:-ir-ab}"
fi

# Total instructions of one run serving $3 requests.
ir() {
  local bin=$1 config=$2 n=$3 tag=$4
  HOOKGATE_BENCH_SPOOL="$OUT/spool-$tag" valgrind --tool=callgrind --callgrind-out-file="$OUT/cg-$tag" \
    "$bin" serve --config "$config" >"$OUT/$tag.stdout" 2>"$OUT/$tag.stderr" &
  local hg=$!; PIDS+=("$hg")
  local addr=""
  for _ in $(seq 1 600); do
    addr=$(sed -n 's/^listening on //p' "$OUT/$tag.stdout" | head -n1)
    [ -n "$addr" ] && break; sleep 0.1
  done
  [ -n "$addr" ] || { echo "$tag: hookgate did not start" >&2; cat "$OUT/$tag.stderr" >&2; exit 1; }
  "$LOADGEN" --url "http://$addr/hooks/github" --requests "$n" --duration 600s --warmup 0s \
    --connections 4 --dup-ratio 0.01 --timeout 60s --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>&1
  kill -TERM "$hg"; wait "$hg" 2>/dev/null || true
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["non_2xx"] == 0, r' "$OUT/$tag.json"
  awk '/^summary:/ {print $2}' "$OUT/cg-$tag"
}

for label in A B; do
  bin=$A; config=$CONFIG_A
  if [ "$label" = B ]; then bin=$B; config=$CONFIG_B; fi
  i1=$(ir "$bin" "$config" "$N1" "$label-$N1")
  i2=$(ir "$bin" "$config" "$N2" "$label-$N2")
  echo "$label: $(( (i2 - i1) / (N2 - N1) )) instructions per request ($i1 for $N1, $i2 for $N2)" | tee -a "$OUT/summary.txt"
done
echo "raw results: $OUT"
