#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (C toolchain
# bits for librdkafka, HAProxy for the proxy, replica and deploy tests, Redis for the
# shared-dedupe and replica tests, curl for the set-webhook test, Chromium and chromedriver
# for the console's browser tests, the Tansu broker, a Python venv for validating deploy/),
# then checks formatting and lints, then runs every
# test (unit tests and the end-to-end suite against real processes on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in build-essential pkg-config libssl-dev zlib1g-dev haproxy redis-server curl chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

bash scripts/install-tansu.sh
# The venv that validates deploy/ offline (kubernetes-validate, the Compose schema).
bash scripts/deploy-tools.sh
export HOOKGATE_TANSU="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"

# Supply-chain policy (deny.toml): licenses, banned/wildcard dependencies, sources. Offline:
# the advisories check needs the RustSec database from GitHub (see deny.toml).
if ! cargo deny --version >/dev/null 2>&1; then
  echo "installing cargo-deny"
  cargo install cargo-deny --locked
fi
# cargo deny --offline reads the registry cache: on a fresh machine it is empty until the
# locked crates are downloaded (crates.io), so fetch them first (a no-op once cached).
cargo fetch --locked
cargo deny --offline check licenses bans sources

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# A few test threads: the end-to-end tests each start a broker and a hookgate process.
mkdir -p target
log=target/test-output.log
set +e
cargo test --workspace --no-fail-fast -- --test-threads "${HOOKGATE_TEST_THREADS:-3}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (the last binary cargo runs is a doc-test run
# with nothing in it, whose own summary would read as "0 passed").
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
