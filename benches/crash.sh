#!/usr/bin/env bash
# benches/crash.sh [KILLS] [SEED]
#
# The long run of the crash test (tests/crash.rs): a seeded random workload of
# pushes, deletes, reads and garbage collection against `strata serve`, killed
# with SIGKILL KILLS times (default 500) at random moments; after every kill
# the daemon restarts and every acknowledged blob must read back exactly,
# nothing half-pushed may appear, and `strata verify --deep` must pass. SEED
# defaults to a random one.
#
# STRATA_CRASH_GC=0 in the environment leaves garbage collection out of the
# workload. Prints the seed, the kill count and the result, and a row for
# BENCHMARKS.md.
# Replay a failure with the same SEED (the seed fixes the workload and the kill
# aims; the exact instant each kill lands still varies from run to run).
set -uo pipefail

KILLS=${1:-500}
SEED=${2:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}
case "$KILLS$SEED" in
  *[!0-9]*) echo "usage: benches/crash.sh [KILLS] [SEED] (decimal numbers)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
export STRATA_CRASH_KILLS=$KILLS STRATA_CRASH_SEED=$SEED
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain -- src tests benches proto build.rs Cargo.toml Cargo.lock 2>/dev/null)" ] ||
  COMMIT="$COMMIT+dirty"
LOG=$(mktemp -t strata-crash.XXXXXX.log)

GC=on; [ "${STRATA_CRASH_GC:-1}" = 0 ] && GC=off
echo "crash bench: seed $SEED, $KILLS kills, gc $GC, commit $COMMIT, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "log: $LOG"
cargo build --release --tests --quiet || exit 2
START=$(date +%s)
cargo test --release --test crash -- --exact acknowledged_blobs_survive_sigkill_at_random_moments \
  --nocapture 2>&1 | tee "$LOG"
RC=${PIPESTATUS[0]}
SECS=$(($(date +%s) - START))

ROUNDS=$(sed -n 's/.* kills in \([0-9]*\) rounds.*/\1/p' "$LOG" | tail -n1)
DONE=$(sed -n 's/.*: \([0-9]*\) kills in [0-9]* rounds.*/\1/p' "$LOG" | tail -n1)
if [ -z "$DONE" ]; then # failed: where it stopped
  ROUNDS=$(sed -n 's/.*, round \([0-9]*\), after [0-9]* kills.*/\1/p' "$LOG" | head -n1)
  DONE=$(sed -n 's/.*, round [0-9]*, after \([0-9]*\) kills.*/\1/p' "$LOG" | head -n1)
fi
if [ "$RC" -eq 0 ]; then RESULT=PASS; else RESULT="FAIL (exit $RC)"; fi
echo
echo "seed:   $SEED"
echo "kills:  ${DONE:-?} (asked for $KILLS) in ${ROUNDS:-?} rounds, ${SECS} s"
echo "result: $RESULT"
echo
echo "| date | commit | seed | kills | gc | rounds | seconds | result |"
echo "|---|---|---|---|---|---|---|---|"
echo "| $(date -u +%Y-%m-%d) | $COMMIT | $SEED | ${DONE:-$KILLS} | $GC | ${ROUNDS:-?} | $SECS | $RESULT |"
exit "$RC"
