#!/usr/bin/env bash
# The floor of the Kafka path: hookgate's producer alone (bench/src/bin/produce-floor.rs,
# no HTTP in front) into a fresh Tansu, ROUNDS times; prints its CPU per event per thread
# group and the broker's CPU per event. Extra arguments go to produce-floor
# (--conns, --partitions, --max-in-flight, --linger, --workers, --secs).
#   bench/produce-floor.sh 3 [--partitions 1 ...]
# Needs target/release/produce-floor (cargo build --release -p hookgate-ingest --bin hookgate
# -p hookgate-bench --bins). Loopback only; stops by itself.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; shift || true
TANSU=${HOOKGATE_TANSU:-$HOME/.cargo/bin/tansu}
BIN=${BIN:-target/release/produce-floor}
TICK=$(getconf CLK_TCK)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for r in $(seq 1 "$ROUNDS"); do
  port=$(free_port)
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >/dev/null 2>&1 &
  tansu=$!; PIDS+=("$tansu")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  out=$(mktemp /tmp/produce-floor.XXXX)
  "$BIN" --brokers "127.0.0.1:$port" --topic "floor.$r" "$@" >"$out" 2>&1 &
  pf=$!
  # The broker's CPU over the producer's measured window (it prints `measuring` at the
  # start and `measured` at the end of it).
  for _ in $(seq 1 600); do grep -q '^measuring' "$out" && break; sleep 0.05; done
  b0=$(ticks "$tansu")
  for _ in $(seq 1 6000); do grep -q '^measured' "$out" && break; kill -0 "$pf" 2>/dev/null || break; sleep 0.05; done
  b1=$(ticks "$tansu")
  wait "$pf"
  n=$(sed -n 's/^events \([0-9]*\) .*/\1/p' "$out")
  echo "== round $r"; grep -v "^measur" "$out"
  [ -n "$n" ] && [ "$n" -gt 0 ] && awk -v b0="$b0" -v b1="$b1" -v n="$n" -v t="$TICK" \
    'BEGIN {printf "%-30s %6.2f us/event\n", "tansu (broker)", (b1 - b0) / t * 1e6 / n}'
  rm -f "$out"
  kill -KILL "$tansu" 2>/dev/null; wait "$tansu" 2>/dev/null
done
