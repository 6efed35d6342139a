#!/usr/bin/env bash
# Instructions per verify, counted by callgrind: for each argument (a provider name, or
# floor:LEN for ring's HMAC-SHA256 of LEN bytes) two runs of the verify_ir bench binary,
# N1 and N2 calls; (total2 - total1) / (N2 - N1) is one call. Deterministic on a busy box.
#
#   cargo bench --workspace --bench verify_ir --no-run
#   bench/verify-ir.sh floor:1024 github box zendesk
#   VERIFY_IR_REALISTIC=1 bench/verify-ir.sh box   # plus 9 unsigned headers (host, user agent…)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VERIFY_IR:-$(ls -t target/release/deps/verify_ir-* | grep -v '\.d$' | head -n1)}
N1=${N1:-200} N2=${N2:-2200}
OUT=$(mktemp -d /tmp/verify-ir.XXXX)
trap 'rm -rf "$OUT"' EXIT
total() {
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg" "$BIN" "$1" "$2" >/dev/null 2>"$OUT/err" \
    || { cat "$OUT/err" >&2; exit 1; }
  awk '/^summary:/ {print $2}' "$OUT/cg"
}
for what in "$@"; do
  i1=$(total "$what" "$N1")
  i2=$(total "$what" "$N2")
  echo "$what $(( (i2 - i1) / (N2 - N1) ))"
done
