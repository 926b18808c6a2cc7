#!/usr/bin/env bash
# Runs the cargo-fuzz targets, each for SECONDS (default 60), on the seed corpus in
# fuzz/corpus/<target> (read only; new inputs go to fuzz/work/<target>, not committed), and
# prints one line per target: executions, corpus size, and whether it found anything.
#   fuzz/run.sh [SECONDS] [TARGET...]      (needs the nightly toolchain and cargo-fuzz)
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sse_decoder convert_request convert_response convert_stream text_chunk vars_expr config_yaml admin_body)
fi
cargo +nightly fuzz build
status=0
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "artifacts/$t"
  log="work/$t.log"
  set +e
  cargo +nightly fuzz run "$t" "work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    -max_len=65536 >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | head -1 || echo 0)
  units=$(find "work/$t" -type f | wc -l)
  if [ $rc -eq 0 ]; then
    echo "fuzz $t: ${secs}s, $execs executions, no finding ($units inputs found so far in fuzz/work/$t)"
  else
    status=1
    echo "fuzz $t: FOUND a failure (exit $rc), see fuzz/$log and fuzz/artifacts/$t"
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -5
  fi
done
exit $status
