#!/usr/bin/env bash
# A/B of two hookgate binaries, closed loop, alternating A and B for ROUNDS rounds. With a
# config that has [kafka] (default bench/configs/kafka-spool.toml: `ack = "kafka"` and a
# spool) each run gets a fresh Tansu broker and its load is checked against the topic
# (--verify-kafka); with a spool-only config (bench/configs/spool.toml) no broker is started.
# Prints req/s, p50/p99 and the hookgate process's CPU per answered request (utime+stime
# from /proc) for every run, then the medians.
#
#   bench/ab.sh OLD_HOOKGATE NEW_HOOKGATE [ROUNDS]
#   CONFIG=bench/configs/spool.toml bench/ab.sh OLD NEW 3
#   CONFIG_A=old.toml CONFIG_B=new.toml bench/ab.sh OLD NEW   (when the configs must differ)
# Loopback only; stops by itself. Needs hookgate-load (release) and, for [kafka], tansu.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 ROUNDS=${3:-3}
LOADGEN=${HOOKGATE_LOAD:-target/release/hookgate-load}
TANSU=${HOOKGATE_TANSU:-$HOME/.cargo/bin/tansu}
DURATION=${DURATION:-10s} CONNS=${CONNS:-64}
CONFIG=${CONFIG:-bench/configs/kafka-spool.toml}
CONFIG_A=${CONFIG_A:-$CONFIG} CONFIG_B=${CONFIG_B:-$CONFIG}
OUT=$(mktemp -d /tmp/ab.XXXX)
TICK=$(getconf CLK_TCK)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
  local label=$1 bin=$2 round=$3 config=$4
  local port; port=$(free_port)
  local tansu="" verify=()
  local topic="bench.ab.$label.$round"
  if grep -q '^\[kafka\]' "$config"; then
    "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ >/dev/null 2>>"$OUT/tansu.stderr" &
    tansu=$!; PIDS+=("$tansu")
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    verify=(--verify-kafka "127.0.0.1:$port" --topic "$topic" --verify-nudge)
  fi
  HOOKGATE_BENCH_BROKERS=127.0.0.1:$port HOOKGATE_BENCH_TOPIC=$topic HOOKGATE_BENCH_SPOOL="$OUT/spool-$label-$round" \
    "$bin" serve --config "$config" >"$OUT/$label-$round.stdout" 2>"$OUT/$label-$round.stderr" &
  local hg=$!; PIDS+=("$hg")
  local addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^listening on //p' "$OUT/$label-$round.stdout" | head -n1)
    [ -n "$addr" ] && break; sleep 0.1
  done
  local t0; t0=$(cpu_ticks "$hg")
  local status=0
  "$LOADGEN" --url "http://$addr/hooks/github" --duration "$DURATION" --warmup 2s --connections "$CONNS" \
    --label "$label" --json "$OUT/$label-$round.json" --dup-ratio 0.01 \
    "${verify[@]}" >"$OUT/$label-$round.txt" || status=$?
  local t1; t1=$(cpu_ticks "$hg")
  kill -TERM "$hg"; wait "$hg" 2>/dev/null || true
  if [ -n "$tansu" ]; then kill -KILL "$tansu"; wait "$tansu" 2>/dev/null || true; fi
  python3 - "$OUT/$label-$round.json" "$((t1 - t0))" "$TICK" "$label" "$round" "$status" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
path, ticks, tck, label, rnd, status = sys.argv[1:]
r = json.load(open(path))
answered = r["accepted"] + r["duplicates"]
# CPU of the whole hookgate process (all threads) over warm-up + measured window, per 200.
us = int(ticks) / int(tck) * 1e6 / max(answered, 1)
k = r.get("kafka") or {}
print(f"{label} r{rnd}: {r['rps']:,.0f} req/s, p50 {r['latency_us']['p50']/1000:.2f} ms, "
      f"p99 {r['latency_us']['p99']/1000:.2f} ms, {us:.1f} us hookgate CPU per 200, "
      f"{r['accepted']} accepted (distinct ids), {r['duplicates']} duplicates, non-2xx {r['non_2xx']}, "
      f"corpus wrapped {r['corpus_wrapped']}, kafka missing {k.get('missing')} written twice {k.get('written_twice')}, exit {status}")
PY
}

for round in $(seq 1 "$ROUNDS"); do
  run A "$A" "$round" "$CONFIG_A"
  run B "$B" "$round" "$CONFIG_B"
done
python3 - "$OUT/summary.txt" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) r\d+: ([\d,]+) req/s, p50 ([\d.]+) ms, p99 ([\d.]+) ms, ([\d.]+) us", line)
    if m:
        rows.setdefault(m[1], []).append((float(m[2].replace(",", "")), float(m[4]), float(m[5])))
for label, rs in sorted(rows.items()):
    print(f"{label} median of {len(rs)}: {statistics.median(r[0] for r in rs):,.0f} req/s, "
          f"p99 {statistics.median(r[1] for r in rs):.2f} ms, {statistics.median(r[2] for r in rs):.1f} us CPU per 200")
PY
echo "raw results: $OUT"
