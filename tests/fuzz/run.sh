#!/usr/bin/env bash
# Runs strata's fuzz targets one after another, niced, each for SECONDS
# (default 600), from the seeds in corpus/<target>/ plus a working corpus
# outside the repo. Logs go to $WORK/<target>.log.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# Env: CARGO_TARGET_DIR (default /var/tmp/strata-fuzz-target),
#      WORK (default /var/tmp/strata-fuzz-work), SANITIZER (default address).
set -euo pipefail
cd "$(dirname "$0")/../.."   # /work/main: picks up .cargo/config.toml (system RocksDB)
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(split_tar unwrap_codec decode_records push_stream)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-fuzz-target}
export RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
work=${WORK:-/var/tmp/strata-fuzz-work}
san=${SANITIZER:-address}
for t in "${targets[@]}"; do
  case $t in
    unwrap_codec) max_len=65536 ;;
    *) max_len=262144 ;;
  esac
  # The codec stage's preflate rebuilder runs a worker thread that it never
  # joins (and the store keeps paused rebuilds, with their workers, between
  # reads): LeakSanitizer reports those threads' memory after an input (not
  # reproducible alone) and at exit. Not a leak of strata's: leaks are off here.
  case $t in
    unwrap_codec|push_stream) extra=(-detect_leaks=0); asan=detect_leaks=0 ;;
    *) extra=(); asan= ;;
  esac
  mkdir -p "$work/corpus/$t"
  echo "== $t: ${secs}s, sanitizer $san, max_len $max_len"
  ASAN_OPTIONS=$asan nice -n 10 cargo fuzz run --fuzz-dir tests/fuzz --sanitizer "$san" "$t" \
    "$work/corpus/$t" "tests/fuzz/corpus/$t" -- \
    -max_len=$max_len -max_total_time="$secs" -print_final_stats=1 "${extra[@]}" \
    >"$work/$t.log" 2>&1 && echo "   ok" || echo "   FAILED (see $work/$t.log)"
  grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$work/$t.log" || true
  grep -E '^#[0-9]+ +(pulse|DONE|NEW|REDUCE)' "$work/$t.log" | tail -1 || true
done
