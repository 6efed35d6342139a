#!/usr/bin/env bash
# Installs the Kafka-protocol broker the tests use: Tansu 0.6.0 from crates.io, with the
# storage features it needs to start. Skips the ~12-30 minute build when it is present.
set -euo pipefail
want="0.6.0"
bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$want"; then
  echo "tansu $want already installed at $bin"
  exit 0
fi
echo "installing tansu $want (cargo install; this takes a while on 2 cores)"
cargo install tansu --locked --version "$want" --features dynostore,libsql
