#!/usr/bin/env bash
# bench/run.sh — hookgate's standard load scenarios, back to back on loopback, then the
# budgets. Closed-loop load is driven by wrk (one thread, like issue 16's measurement)
# replaying a corpus of distinct pre-signed GitHub pushes (~1 KB) written by
# `hookgate-load --write-corpus` (each request its own delivery id, --dup-ratio of them
# re-sending an earlier one); hookgate-load drives the open loop (coordinated-omission
# correction), reads Kafka back, and drives one cross-check run per generator pair:
#
#   1. bare-hyper-w1/-w2      the ceiling: bare hyper with 1 and 2 runtime workers; plus
#      bare-hyper-w2-hl       bare-hyper-w2 driven by hookgate-load (generator cross-check)
#      bare-hyper-work-w1/-w2 control: bare hyper spinning --control-work per request (plain
#                             CPU work the size of hookgate's own at 1 worker), in the same
#                             rounds: what any extra per-request CPU costs at 1 and 2 workers
#   2. hookgate-discard-w1/-w2 hookgate (TOKIO_WORKER_THREADS=1/2), verify + dedupe, a log
#                             that discards (HOOKGATE__BENCH__DISCARD); 1 and 2 alternate for
#                             --rounds rounds; the rows of one worker count report the round
#                             whose hookgate / bare-hyper ratio is the median of the rounds
#   3. kafka-c64 / kafka-c256 hookgate into Kafka (Tansu on loopback, acks=all), closed loop
#      kafka-c64-hl           kafka-c64 again, driven by hookgate-load (cross-check)
#      kafka-open-half        open loop (hookgate-load) at half of kafka-c64's req/s
#      kafka-ceiling          control, just before kafka-c64: bare hyper appending each body
#                             through hookgate's own producer (bare-hyper --kafka: acks=all,
#                             answer after the ack; no verify, dedupe or routing)
#      kafka-ceiling-open-half the same control, open loop, just before kafka-open-half
#   4. spool                  hookgate with the local spool as the log (fsync group commit)
#   5. spool-slow-sink        scenario 4 plus a route to an `http` sink that takes 5 s per call
#   6. kafka-c64-1core/-2core kafka-c64 with hookgate pinned (taskset) to 1 and to 2 cores,
#                             broker and generator on the other cores where there are any
#
# Every scenario reports, over its measured window only (not the warm-up): the CPU per 2xx
# event of each process (hookgate with all its threads, librdkafka's included; Tansu; the
# generator), from /proc/PID/stat, and the distinct delivery ids sent. A run whose corpus
# wrapped (it would measure dedupe hits, not new events) is REFUSED: not reported. Every
# Kafka scenario reads the topic back: each accepted id exactly once.
#
# It builds release, starts every process itself (fresh servers and broker per run), stops
# them all on exit, writes each result to target/hookgate-bench/<UTC time>/ (and the
# `latest` link), and puts the tables in bench/RESULTS.md between the `run.sh:begin/end`
# markers (the rest of that file is kept).
#
# Usage: bench/run.sh [--duration 10s] [--warmup 1s] [--connections 64] [--no-build]
#                     [--no-budgets] [--all-benches] [--skip-criterion]
#                     [--only "1 2 3 4 5 6"] [--sink-delay 5s] [--rounds 3]
#                     [--dup-ratio 0.01] [--rate-bound 160000] [--control-work 2us]
#   --all-benches     budgets runs every criterion bench (default: the budgeted ones only)
#   --skip-criterion  budgets reads the criterion results already under target/criterion
#   --sink-delay      how long scenario 5's sink takes per call
#   --rounds          how many alternating rounds of scenarios 1 and 2 (rows report the round of
#                     the median hookgate / bare-hyper ratio at their worker count)
#   --dup-ratio       share of requests that re-send an earlier delivery (W1: 1%)
#   --rate-bound      req/s no scenario can reach: the corpus holds (warm-up + duration) x
#                     this many requests (~1.4 KB each, on disk under the results folder,
#                     deleted at exit); a run that still wraps is refused
#   --control-work    how long bare-hyper-work spins per request (about hookgate-discard-w1's
#                     CPU per event minus bare-hyper-w1's in recent runs)
set -euo pipefail

DURATION=10s
WARMUP=1s
CONNS=64
BUILD=1
BUDGETS=1
BUDGET_ARGS=(--only-budgeted)
ONLY="1 2 3 4 5 6"
SINK_DELAY=5s
ROUNDS=3
DUP_RATIO=0.01
RATE_BOUND=160000
CONTROL_WORK=2us
ARGS_TEXT="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --no-budgets) BUDGETS=0; shift ;;
    --all-benches) BUDGET_ARGS=(); shift ;;
    --skip-criterion) BUDGET_ARGS=(--skip-bench); shift ;;
    --only) ONLY=$2; shift 2 ;;
    --sink-delay) SINK_DELAY=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --dup-ratio) DUP_RATIO=$2; shift 2 ;;
    --rate-bound) RATE_BOUND=$2; shift 2 ;;
    --control-work) CONTROL_WORK=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# HOOKGATE_BENCH_BIN: where the binaries are (default: the release build; a debug folder
# only proves the pipeline, its numbers mean nothing).
BIN=${HOOKGATE_BENCH_BIN:-$TARGET/release}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$TARGET/hookgate-bench/$STAMP
mkdir -p "$OUT"
ln -sfn "$STAMP" "$TARGET/hookgate-bench/latest"
TANSU=${TANSU:-$HOME/.cargo/bin/tansu}
NCPU=$(nproc)
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 2; }

if [ "$BUILD" = 1 ]; then
  cargo build --release -p hookgate-ingest --bin hookgate -p hookgate-bench --bins
fi

PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  rm -rf "$OUT/spool" "$OUT/corpus"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
secs() { python3 -c 'import re,sys; m=re.fullmatch(r"([\d.]+)(ms|s|m)?", sys.argv[1]); print(float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m[2]])' "$1"; }

# The corpus every wrk run replays from its start (each run has a fresh server, so the
# same delivery ids are new to each).
COUNT=$(python3 -c "import math,sys; print(math.ceil((float(sys.argv[1]) + float(sys.argv[2])) * int(sys.argv[3])))" \
  "$(secs "$WARMUP")" "$(secs "$DURATION")" "$RATE_BOUND")
echo "writing the corpus: $COUNT requests (dup ratio $DUP_RATIO)…"
"$BIN/hookgate-load" --write-corpus "$OUT/corpus" --count "$COUNT" --dup-ratio "$DUP_RATIO" \
  --url http://127.0.0.1:8080/hooks/github

# start_server NAME CMD... — runs CMD in the background, waits for "listening on ADDR",
# sets SERVER_PID and SERVER_ADDR.
start_server() {
  local name=$1; shift
  : >"$OUT/$name.stdout" # exists before the background shell opens it (sed reads it below)
  "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 300); do
    SERVER_ADDR=$(sed -n 's/^listening on //p' "$OUT/$name.stdout" | head -n1)
    [ -n "$SERVER_ADDR" ] && return 0
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "$name exited before listening; stderr:" >&2
      tail -n 20 "$OUT/$name.stderr" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$name did not print 'listening on' within 30 s" >&2
  return 1
}

stop_server() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Taskset prefixes (scenario 6), empty otherwise: the generator, the broker, hookgate.
GEN_PIN=()
BROKER_PIN=()
HG_PIN=()

# load FILE LABEL URL [--by-hookgate-load] [hookgate-load args…] — one run, driven by wrk
# over the corpus, or by hookgate-load itself with --by-hookgate-load.
load() {
  local file=$1 label=$2 url=$3; shift 3
  local driver=(--wrk --corpus-file "$OUT/corpus")
  if [ "${1:-}" = --by-hookgate-load ]; then driver=(); shift; fi
  echo
  echo "=== $label ==="
  local status=0
  "${GEN_PIN[@]}" "$BIN/hookgate-load" "${driver[@]}" --url "$url" --duration "$DURATION" --warmup "$WARMUP" \
    --label "$label" --json "$OUT/$file.json" --dup-ratio "$DUP_RATIO" "$@" \
    | tee "$OUT/$file.txt" || status=$?
  # The ceiling (bare-hyper --kafka) has no dedupe: a re-sent delivery is stored again
  # under a new id, which the read-back counts; only missing or twice-written ids count.
  if [ "$status" = 3 ] && [ -n "${NO_DEDUPE:-}" ] &&
    jq -e '.kafka.missing == 0 and .kafka.written_twice == 0' "$OUT/$file.json" >/dev/null 2>&1; then
    echo "($label: delivery ids under two ids are its re-sends: it has no dedupe)"
    status=0
  fi
  case $status in
    0) ;;
    3) echo "!!! $label: accepted ids are MISSING from Kafka (see above)" ;;
    4) echo "!!! $label: REFUSED (the corpus wrapped; raise --rate-bound)"; rm -f "$OUT/$file.json" ;;
    *) echo "!!! $label: hookgate-load failed (exit $status)" ;;
  esac
}

rps_of() { jq -r '.rps' "$OUT/$1.json"; }

want() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# Scenarios 1 and 2: bare hyper and hookgate-discard with the same worker count (1, then
# 2), a fresh server per run, alternating for ROUNDS rounds: this machine's speed drifts
# by 10-15% from one minute to the next. Each row reports its median round by req/s; every
# round is kept under rounds/.
CEILING_NOTE=""
if want 1 || want 2; then
  mkdir -p "$OUT/rounds" "$OUT/spool"
  for r in $(seq 1 "$ROUNDS"); do
    for w in 1 2; do
      if want 1; then
        start_server "bare-hyper-w$w" "$BIN/bare-hyper" --listen 127.0.0.1:0 --threads "$w" --exit-after 900
        load "rounds/1-bare-hyper-w$w.r$r" "bare-hyper-w$w" "http://$SERVER_ADDR/hooks/github" \
          --connections "$CONNS" --cpu "bare-hyper=$SERVER_PID"
        stop_server "$SERVER_PID"
        start_server "bare-hyper-work-w$w" "$BIN/bare-hyper" --listen 127.0.0.1:0 --threads "$w" \
          --work "$CONTROL_WORK" --exit-after 900
        load "rounds/1w-bare-hyper-work-w$w.r$r" "bare-hyper-work-w$w" "http://$SERVER_ADDR/hooks/github" \
          --connections "$CONNS" --cpu "bare-hyper=$SERVER_PID"
        stop_server "$SERVER_PID"
      fi
      if want 2; then
        rm -rf "$OUT/spool/discard"
        HOOKGATE__BENCH__DISCARD=true HOOKGATE_BENCH_SPOOL="$OUT/spool/discard" TOKIO_WORKER_THREADS=$w \
          start_server "hookgate-discard-w$w" "$BIN/hookgate" serve --config bench/configs/spool.toml
        load "rounds/2-hookgate-discard-w$w.r$r" "hookgate-discard-w$w" "http://$SERVER_ADDR/hooks/github" \
          --connections "$CONNS" --cpu "hookgate=$SERVER_PID"
        stop_server "$SERVER_PID"
      fi
    done
  done
  CEILING_NOTE=$(python3 - "$OUT" "$ROUNDS" "$CONNS" "$CONTROL_WORK" <<'PY'
import json, shutil, sys
out, rounds, conns, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lines, rps = [], {}
for name in ("1-bare-hyper-w1", "1w-bare-hyper-work-w1", "2-hookgate-discard-w1",
             "1-bare-hyper-w2", "1w-bare-hyper-work-w2", "2-hookgate-discard-w2"):
    runs = []
    for r in range(1, rounds + 1):
        try:
            with open(f"{out}/rounds/{name}.r{r}.json") as f:
                j = json.load(f)
        except FileNotFoundError:
            continue
        cpu = next((c["us_per_event"] for c in j.get("cpu", []) if c["name"] in ("hookgate", "bare-hyper")), 0)
        runs.append((j["rps"], r, cpu))
    if not runs:
        continue
    rps[name] = runs
# Which round each row reports: at each worker count, the round whose hookgate / bare-hyper
# req/s ratio is the median of the rounds, for all three rows of that worker count (the
# machine drifts between rounds; a ratio of two runs minutes apart measures the drift).
# Without both (e.g. --only 1), each row's own median round.
chosen = {}
for w in ("w1", "w2"):
    b, d = rps.get(f"1-bare-hyper-{w}"), rps.get(f"2-hookgate-discard-{w}")
    if b and d:
        by_round = {r: x for x, r, _ in b}
        paired = sorted((y / by_round[r], r) for y, r, _ in d if by_round.get(r))
        if paired:
            _, r = paired[(len(paired) - 1) // 2]
            for name in (f"1-bare-hyper-{w}", f"1w-bare-hyper-work-{w}", f"2-hookgate-discard-{w}"):
                chosen[name] = (r, "the round of the median hookgate / bare-hyper ratio")
for name, runs in rps.items():
    if name not in chosen or not any(r == chosen[name][0] for _, r, _ in runs):
        chosen[name] = (sorted(runs)[(len(runs) - 1) // 2][1], "the median")
    r, why = chosen[name]
    for ext in ("json", "txt"):
        shutil.copy(f"{out}/rounds/{name}.r{r}.{ext}", f"{out}/{name}.{ext}")
    lines.append(f"{name}: " + ", ".join(f"{x:,.0f} req/s ({c:.1f} µs CPU/event)" for x, _, c in runs)
                 + f"; reported: round {r}, {why}")
def ratios(what, b, d):
    if b and d:
        lines.append(f"{what}, per round: req/s "
                     + ", ".join(f"{y[0] / x[0]:.1%}" for x, y in zip(b, d) if x[0])
                     + "; server CPU per event "
                     + ", ".join(f"{y[2] / x[2]:.2f}×" for x, y in zip(b, d) if x[2]))
for w in ("w1", "w2"):
    b, d = rps.get(f"1-bare-hyper-{w}"), rps.get(f"2-hookgate-discard-{w}")
    ratios(f"hookgate-discard / bare-hyper at {w}", b, d)
    ratios(f"control: bare-hyper --work {work} / bare-hyper at {w}", b, rps.get(f"1w-bare-hyper-work-{w}"))
print(f"Scenarios 1-2: {rounds} round(s), workers 1 then 2 in each, fresh server per run (c{conns}, wrk -t1):\n")
print("\n".join(f"- {l}" for l in lines))
PY
)
  echo "$CEILING_NOTE" | tee "$OUT/ceiling-rounds.md"
  if want 1; then
    # The generator cross-check on the ceiling: the same server driven by hookgate-load.
    start_server bare-hyper-w2-hl "$BIN/bare-hyper" --listen 127.0.0.1:0 --threads 2 --exit-after 900
    load 1-bare-hyper-w2-hl bare-hyper-w2-hl "http://$SERVER_ADDR/hooks/github" --by-hookgate-load \
      --connections "$CONNS" --cpu "bare-hyper=$SERVER_PID"
    stop_server "$SERVER_PID"
  fi
  rm -rf "$OUT/spool"
fi

# A fresh broker per Kafka run: Tansu's memory storage keeps every record, and a broker
# carried over from the previous scenario measured slower (same-session A/B).
start_tansu() {
  KPORT=$(free_port)
  BROKERS=127.0.0.1:$KPORT
  "${BROKER_PIN[@]}" "$TANSU" broker --listener-url "tcp://$BROKERS" --advertised-listener-url "tcp://$BROKERS" \
    --storage-engine memory://tansu/ >>"$OUT/tansu.stdout" 2>>"$OUT/tansu.stderr" &
  TANSU_PID=$!
  PIDS+=("$TANSU_PID")
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break
    sleep 0.1
  done
}
# kafka_scenario FILE LABEL TOPIC [load args…]
kafka_scenario() {
  local file=$1 label=$2 topic=$3; shift 3
  start_tansu
  HOOKGATE_BENCH_BROKERS=$BROKERS HOOKGATE_BENCH_TOPIC=$topic \
    start_server "hookgate-$label" "${HG_PIN[@]}" "$BIN/hookgate" serve --config bench/configs/kafka.toml
  load "$file" "$label" "http://$SERVER_ADDR/hooks/github" "$@" \
    --verify-kafka "$BROKERS" --topic "$topic" --verify-nudge \
    --cpu "hookgate=$SERVER_PID" --cpu "tansu=$TANSU_PID"
  stop_server "$SERVER_PID"
  stop_server "$TANSU_PID"
}

# kafka_ceiling FILE LABEL TOPIC [load args…]: bare-hyper --kafka (hookgate's producer,
# nothing else) into a fresh broker, read back like every Kafka scenario.
kafka_ceiling() {
  local file=$1 label=$2 topic=$3; shift 3
  start_tansu
  start_server "$label" "$BIN/bare-hyper" --listen 127.0.0.1:0 --kafka "$BROKERS" \
    --topic "$topic" --exit-after 900
  NO_DEDUPE=1 load "$file" "$label" "http://$SERVER_ADDR/hooks/github" "$@" \
    --verify-kafka "$BROKERS" --topic "$topic" --verify-nudge \
    --cpu "bare-hyper=$SERVER_PID" --cpu "tansu=$TANSU_PID"
  stop_server "$SERVER_PID"
  stop_server "$TANSU_PID"
}

if want 3; then
  kafka_ceiling 3k-kafka-ceiling kafka-ceiling bench.ceiling --connections 64
  kafka_scenario 3a-kafka-c64 kafka-c64 bench.c64 --connections 64
  kafka_scenario 3b-kafka-c64-hl kafka-c64-hl bench.c64hl --by-hookgate-load --connections 64
  kafka_scenario 3c-kafka-c256 kafka-c256 bench.c256 --connections 256
  if [ -f "$OUT/3a-kafka-c64.json" ]; then
    HALF=$(jq -n --argjson a "$(rps_of 3a-kafka-c64)" '$a / 2 | floor')
    if [ "$HALF" -gt 0 ]; then
      kafka_ceiling 3l-kafka-ceiling-open-half kafka-ceiling-open-half bench.ceilopen --by-hookgate-load \
        --connections 256 --mode open --rate "$HALF"
      kafka_scenario 3d-kafka-open-half kafka-open-half bench.open --by-hookgate-load --connections 256 \
        --mode open --rate "$HALF"
    fi
  fi
fi
# The two generators on the same scenario in the same run: req/s, the server's CPU per
# event, and each generator's own CPU per request.
CROSS_NOTE=$(python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(f"{out}/{name}.json"))
    except FileNotFoundError:
        return None
def cpu(r, names):
    return next((c["us_per_event"] for c in r.get("cpu", []) if c["name"] in names), float("nan"))
rows = []
for a, b in (("1-bare-hyper-w2", "1-bare-hyper-w2-hl"), ("3a-kafka-c64", "3b-kafka-c64-hl")):
    w, h = load(a), load(b)
    if not (w and h):
        continue
    server = ("hookgate", "bare-hyper")
    rows.append(f"| {w['label']} | {w['rps']:,.0f} | {h['rps']:,.0f} | {h['rps'] / w['rps']:.2f} | "
                f"{cpu(w, server):.1f} / {cpu(h, server):.1f} | "
                f"{cpu(w, ('generator',)):.1f} / {cpu(h, ('generator',)):.1f} | "
                f"{cpu(h, ('generator',)) / cpu(w, ('generator',)):.2f} |")
pairs = [(what, load(a), load(b)) for what, a, b in (
    ("closed loop c64 (wrk)", "3k-kafka-ceiling", "3a-kafka-c64"),
    ("open loop at half of kafka-c64 (hookgate-load)", "3l-kafka-ceiling-open-half", "3d-kafka-open-half"))]
pairs = [(w, c, h) for w, c, h in pairs if c and h]
if pairs:
    print("### Kafka: hookgate against the ceiling of hyper + its producer (same run, back to back)\n")
    print("bare-hyper --kafka reads the body, appends it through hookgate's producer (acks=all) and answers after the ack; hookgate also verifies, dedupes and routes.\n")
    print("| load | server | req/s | p99 ms | server CPU µs/event | broker CPU µs/event |")
    print("|---|---|---:|---:|---:|---:|")
    ratios = []
    for what, ceil, hg in pairs:
        c_cpu, h_cpu = cpu(ceil, ("bare-hyper",)), cpu(hg, ("hookgate",))
        for name, r, c in (("bare-hyper --kafka", ceil, c_cpu), ("hookgate", hg, h_cpu)):
            print(f"| {what} | {name} | {r['rps']:,.0f} | {r['latency_us']['p99'] / 1000:.2f} | {c:.1f} | {cpu(r, ('tansu',)):.1f} |")
        ratios.append(f"{what}: req/s {hg['rps'] / ceil['rps']:.2f}×, p99 {hg['latency_us']['p99'] / ceil['latency_us']['p99']:.2f}×, CPU per event {h_cpu / c_cpu:.2f}×")
    print("\nhookgate / ceiling: " + "; ".join(ratios) + ".\n")
if rows:
    print("### Generator cross-check (same scenario, same run: wrk, then hookgate-load)\n")
    print("| scenario | wrk req/s | hookgate-load req/s | hl / wrk | server CPU µs/event (wrk run / hl run) | generator CPU µs/request (wrk / hl) | hl / wrk generator CPU |")
    print("|---|---:|---:|---:|---|---|---:|")
    print("\n".join(rows))
PY
)
[ -n "$CROSS_NOTE" ] && echo "$CROSS_NOTE" | tee "$OUT/cross-check.md"

if want 4; then
  mkdir -p "$OUT/spool"
  HOOKGATE_BENCH_SPOOL="$OUT/spool/spool" \
    start_server hookgate-spool "$BIN/hookgate" serve --config bench/configs/spool.toml
  load 4-spool spool "http://$SERVER_ADDR/hooks/github" --connections "$CONNS" --cpu "hookgate=$SERVER_PID"
  curl -s --max-time 5 "http://$SERVER_ADDR/metrics" >"$OUT/4-spool.metrics" || true
  stop_server "$SERVER_PID"
  rm -rf "$OUT/spool"
fi

SLOW_SINK_NOTE=""
if want 5; then
  # The slow destination: answers every request after $SINK_DELAY, counts them on exit.
  start_server slow-sink "$BIN/bare-hyper" --listen 127.0.0.1:0 --delay "$SINK_DELAY" \
    --threads 1 --exit-after 900
  SINK_PID=$SERVER_PID
  SINK_ADDR=$SERVER_ADDR
  mkdir -p "$OUT/spool"
  HOOKGATE_BENCH_SPOOL="$OUT/spool/slow-sink" HOOKGATE_BENCH_SINK_URL="http://$SINK_ADDR/" \
    start_server hookgate-spool-slow-sink "$BIN/hookgate" serve --config bench/configs/spool-slow-sink.toml
  load 5-spool-slow-sink spool-slow-sink "http://$SERVER_ADDR/hooks/github" --connections "$CONNS" \
    --cpu "hookgate=$SERVER_PID"
  # The dispatcher's own account of the sink, read before hookgate stops.
  curl -s --max-time 5 "http://$SERVER_ADDR/metrics" >"$OUT/5-spool-slow-sink.metrics" || true
  stop_server "$SERVER_PID"
  stop_server "$SINK_PID"
  rm -rf "$OUT/spool"
  SINK_CALLS=$(sed -n 's/^requests: //p' "$OUT/slow-sink.stdout" | tail -n1)
  SINK_METRICS=$(grep -E '^hookgate_sink_(attempts|deliveries)_total' "$OUT/5-spool-slow-sink.metrics" \
    | sed 's/^/    /' || true)
  SLOW_SINK_NOTE=$(
    echo "### Slow sink (scenario 5 vs 4: same closed loop, c$CONNS, back to back)"
    echo
    if [ -f "$OUT/4-spool.json" ] && [ -f "$OUT/5-spool-slow-sink.json" ]; then
      jq -rn --slurpfile a "$OUT/4-spool.json" --slurpfile b "$OUT/5-spool-slow-sink.json" '
        def d2: (. * 100 | round) as $c | ($c % 100) as $f
          | "\(($c - $f) / 100).\(if $f < 10 then "0" else "" end)\($f)";
        "p99 with the slow sink / p99 without: **\($b[0].latency_us.p99 / $a[0].latency_us.p99 | d2)×**; req/s ratio \($b[0].rps / $a[0].rps | d2)×."'
    else
      echo "(scenario 4 or 5 missing: run both, e.g. --only \"4 5\")"
    fi
    echo "The sink (bare-hyper --delay $SINK_DELAY) saw: ${SINK_CALLS:-no count printed}; hookgate's /metrics at the end:"
    echo
    if [ -n "$SINK_METRICS" ]; then echo "$SINK_METRICS"; else echo "    (no hookgate_sink_ counters yet)"; fi
  )
  echo "$SLOW_SINK_NOTE" | tee "$OUT/slow-sink.md"
fi

MULTI_NOTE=""
if want 6; then
  # hookgate on CPU 0 (1 core) or CPUs 0-1 (2 cores); broker and generator on the CPUs
  # left, or on the last CPU when none is left (then they share it with hookgate).
  last=$((NCPU - 1))
  : >"$OUT/pinning.txt"
  for cores in 1 2; do
    [ "$cores" -le "$NCPU" ] || continue
    if [ "$cores" = 1 ]; then hg_cpus=0; else hg_cpus=0-1; fi
    if [ "$NCPU" -gt $((cores + 1)) ]; then other="$cores-$last"; else other="$last"; fi
    HG_PIN=(taskset -c "$hg_cpus") BROKER_PIN=(taskset -c "$other") GEN_PIN=(taskset -c "$other")
    kafka_scenario "6-kafka-c64-${cores}core" "kafka-c64-${cores}core" "bench.core$cores" --connections 64
    echo "$cores $hg_cpus $other" >>"$OUT/pinning.txt"
  done
  HG_PIN=() BROKER_PIN=() GEN_PIN=()
  MULTI_NOTE=$(python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print("### Multi-core: kafka-c64 with hookgate pinned (taskset), events per core-second\n")
print("| hookgate CPUs | broker + wrk CPUs | req/s | req/s per core given to hookgate | hookgate CPU µs/event | events per hookgate CPU-second | hookgate cores busy |")
print("|---|---|---:|---:|---:|---:|---:|")
for line in open(f"{out}/pinning.txt"):
    cores, hg, other = line.split()
    try:
        r = json.load(open(f"{out}/6-kafka-c64-{cores}core.json"))
    except FileNotFoundError:
        print(f"| {hg} | {other} | refused or failed | | | | |")
        continue
    c = next((c for c in r.get("cpu", []) if c["name"] == "hookgate"), None)
    us = c["us_per_event"] if c else 0
    busy = c["cpu_s"] / c["window_s"] if c and c["window_s"] else 0
    lo, hi = (int(x) for x in (hg.split("-") + [hg])[:2])
    olo, ohi = (int(x) for x in (other.split("-") + [other])[:2])
    shared = " (shared with hookgate)" if olo <= hi and lo <= ohi else ""
    print(f"| {hg} | {other}{shared} | {r['rps']:,.0f} | {r['rps'] / int(cores):,.0f} | {us:.1f} | {1e6 / us if us else 0:,.0f} | {busy:.2f} |")
PY
)
  echo "$MULTI_NOTE" | tee "$OUT/multicore.md"
fi

"$BIN/hookgate-load" --report "$OUT" --baseline bare-hyper-w2 >"$OUT/table.md"
BUDGET_OUT="(budgets not run: --no-budgets)"
if [ "$BUDGETS" = 1 ]; then
  BUDGET_OUT=$("$BIN/budgets" --load-results "$OUT" "${BUDGET_ARGS[@]}" 2>"$OUT/budgets.stderr") || true
  echo "$BUDGET_OUT" >"$OUT/budgets.md"
fi

# ---- bench/RESULTS.md ------------------------------------------------------------------
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# RESULTS.md itself is left modified by an earlier run: not a change to what is measured.
git diff --quiet -- . ':(exclude)bench/RESULTS.md' 2>/dev/null || REV="$REV + uncommitted changes"
BLOCK=$OUT/results-block.md
{
  echo "<!-- run.sh:begin (everything up to run.sh:end is rewritten by bench/run.sh) -->"
  echo "## Last run"
  echo
  echo "- date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "- machine: $(nproc) CPU(s), ${CPU:-unknown CPU}, $(free -g | awk '/^Mem:/ {print $2 " GiB RAM"}'), kernel $(uname -r)"
  echo "- command: \`bench/run.sh${ARGS_TEXT:+ $ARGS_TEXT}\` (revision $REV; binaries: ${BIN#"$ROOT"/})"
  echo "- load: $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2) -t1 (closed loop) replaying $COUNT distinct pre-signed GitHub \`push\` requests (~1 KB bodies, a share of $DUP_RATIO re-sending an earlier delivery), hookgate-load for open loop and the cross-checks; HTTP/1.1 keep-alive, $DURATION measured after $WARMUP warm-up, generator on the same machine; Kafka = Tansu (memory storage) on loopback, idempotent producer, acks=all, read back after each run"
  echo "- CPU µs/event: utime+stime from /proc/PID/stat over the measured window (all threads), divided by the 2xx answers in it; server = hookgate or bare-hyper"
  echo "- raw results: \`target/hookgate-bench/$STAMP/\`"
  echo
  echo "### Load scenarios (ratio = req/s vs bare-hyper-w2)"
  echo
  cat "$OUT/table.md"
  echo
  if [ -n "$CEILING_NOTE" ]; then
    echo "$CEILING_NOTE"
    echo
  fi
  for note in "$CROSS_NOTE" "$MULTI_NOTE" "$SLOW_SINK_NOTE"; do
    if [ -n "$note" ]; then
      echo "$note"
      echo
    fi
  done
  echo "### Budgets (\`bench/budgets.toml\`)"
  echo
  echo "$BUDGET_OUT"
  echo
  echo "<!-- run.sh:end -->"
} >"$BLOCK"
RESULTS=bench/RESULTS.md
if [ -f "$RESULTS" ] && grep -q '<!-- run.sh:begin' "$RESULTS"; then
  awk -v block="$BLOCK" '
    /<!-- run.sh:begin/ { while ((getline line < block) > 0) print line; skip = 1; next }
    /<!-- run.sh:end -->/ { skip = 0; next }
    !skip { print }
  ' "$RESULTS" >"$OUT/RESULTS.md.new"
  mv "$OUT/RESULTS.md.new" "$RESULTS"
else
  { echo "# hookgate bench results"; echo; cat "$BLOCK"; } >"$RESULTS"
fi
echo
cat "$OUT/table.md"
echo
echo "$BUDGET_OUT"
echo "results: $OUT; table written to $RESULTS"
