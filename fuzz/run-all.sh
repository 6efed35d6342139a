#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) one after another, niced, one process each,
# for FUZZ_SECONDS (default 600) each, and logs to fuzz/logs/<target>.log.
# The numbers in fuzz/RUNS.md come from these logs. Needs nightly and cargo-fuzz.
set -uo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-600}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=($(cargo +nightly fuzz list))
fi
mkdir -p logs
# -s none: no AddressSanitizer. hookgate denies unsafe code, so a panic is what the targets
# look for; and ASan-instrumented C (zstd-sys via cc) breaks librdkafka's configure checks.
cargo +nightly fuzz build -s none || exit 1
for t in "${targets[@]}"; do
    start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    t0=$(date +%s)
    echo "== $t start $start" | tee "logs/$t.summary"
    # -jobs=1 writes libFuzzer's own output to fuzz-0.log in the working directory.
    rm -f fuzz-0.log
    nice -n 19 cargo +nightly fuzz run -s none "$t" -- \
        -jobs=1 -workers=1 -max_total_time="$secs" -rss_limit_mb=2048 -timeout=25 \
        -print_final_stats=1 > "logs/$t.cargo.log" 2>&1
    rc=$?
    [ -f fuzz-0.log ] && mv fuzz-0.log "logs/$t.log"
    t1=$(date +%s)
    {
        echo "rc=$rc wall=$((t1 - t0))s"
        echo "corpus=$(ls "corpus/$t" | wc -l) files"
        echo "artifacts=$(ls "artifacts/$t" 2>/dev/null | wc -l)"
        grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|Done [0-9]+ runs" "logs/$t.log" 2>/dev/null | tail -4
    } | tee -a "logs/$t.summary"
done
