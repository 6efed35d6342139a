#!/usr/bin/env bash
# The spill A/B of issue 12: bench/ab.sh with `ack = "kafka"` and a spool.
#   bench/spill-ab.sh OLD_HOOKGATE NEW_HOOKGATE [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=bench/configs/kafka-spool.toml exec bash bench/ab.sh "$@"
