#!/usr/bin/env bash
# benches/spares.sh CORPUS_DIR [WORK_DIR]
#
# Spare copies in the bucket (issue 17): the distinct layer tars of a corpus
# (shared/corpus/make-corpus.sh) pushed through two daemons at once, A and
# B, sharing one bucket on a three-node Garage cluster on this machine
# (tests/garage/cluster.sh). Neither sees the other's segments during the
# pushes, so both store every layer. Reports the bucket's pack bytes after
# the pushes and after each collection (the spares marked, then deleted a
# grace period later), against one daemon pushing the same layers alone,
# and checks that A, B and a daemon on an empty data directory read every
# layer back exact.
#
# Environment: STRATA (binary; default: cargo build --release), LIMIT
# (first N layers), GRACE (--s3-gc-grace, default 20s).
set -euo pipefail

CORPUS=$(realpath "${1:?usage: benches/spares.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench-spares}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
# shellcheck source=benches/common.sh
. "$HERE/common.sh"
GRACE=${GRACE:-20}
corpus_layers "$CORPUS"

garage_start "${GARAGE_BASE_PORT:-25800}"
# Sync rounds far apart: the daemons see each other's segments only on a miss.
args() { echo --metrics-addr off --store "s3://strata/$1" --s3-endpoint "$EP" --s3-region garage \
  --s3-timeout 1s --s3-gc-grace "${GRACE}s" --gc-interval 1h --s3-sync-interval 1h; }
pack_bytes() { STRATA_SOCKET=$1/strata.sock "$STRATA" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bucket_pack_bytes"])'; }
# start DIR PREFIX: a daemon (common.sh's strata_start), its pid in PID.
# shellcheck disable=SC2046
start() { mkdir -p "$1"; strata_start "$1" $(args "$2"); }
check_reads() { # DIR: every layer read back exact through that daemon
  local i ok=0
  for i in "${!LAYERS[@]}"; do
    got=$(STRATA_SOCKET=$1/strata.sock "$STRATA" cat "${DIGESTS[$i]}" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "${DIGESTS[$i]}" ] && ok=$((ok + 1))
  done
  [ "$ok" = "${#LAYERS[@]}" ] || { echo "$1: only $ok of ${#LAYERS[@]} layers read back exact" >&2; exit 1; }
}

say "# spares benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "corpus: ${#LAYERS[@]} distinct layer tars, $TOTAL bytes; $(nproc) cores; $("$STRATA" --version); Garage 2.5.0, 3 nodes on 127.0.0.1; --s3-gc-grace ${GRACE}s"
say ""
# One daemon alone: the bytes one copy takes.
start "$WORK/alone" alone; P0=$PID
STRATA_SOCKET=$WORK/alone/strata.sock "$STRATA" push "${LAYERS[@]}" >"$WORK/push-alone.txt"
ALONE=$(pack_bytes "$WORK/alone")
kill -TERM "$P0"; wait "$P0" || true
mapfile -t DIGESTS < <(cut -d' ' -f1 "$WORK/push-alone.txt")

start "$WORK/a" twin; PA=$PID
start "$WORK/b" twin; PB=$PID
trap 'bash "$CLUSTER" stop "$G" >/dev/null 2>&1 || true; kill $PA $PB 2>/dev/null || true' EXIT
t0=$(now)
STRATA_SOCKET=$WORK/a/strata.sock "$STRATA" push "${LAYERS[@]}" >"$WORK/push-a.txt" &
QA=$!
STRATA_SOCKET=$WORK/b/strata.sock "$STRATA" push "${LAYERS[@]}" >"$WORK/push-b.txt" &
QB=$!
wait "$QA" "$QB"
t1=$(now)
cmp -s <(cut -d' ' -f1 "$WORK/push-a.txt") <(cut -d' ' -f1 "$WORK/push-b.txt") || { echo "A and B disagree on digests" >&2; exit 1; }
TWICE=$(pack_bytes "$WORK/a")
say "both pushes at once: $(secs "$t0" "$t1") s; one daemon alone stores $ALONE pack bytes"
say ""
say "| step | seconds | spare content objects | marked | deleted | bucket pack bytes | × one copy |"
say "|---|---:|---:|---:|---:|---:|---:|"
say "| after both pushes | | | | | $TWICE | $(python3 -c "print(f'{$TWICE/$ALONE:.3f}')") |"
for run in 1 2 3; do
  sleep "$GRACE"
  t0=$(now); R=$(STRATA_SOCKET=$WORK/a/strata.sock "$STRATA" gc --json --no-densify); t1=$(now)
  F=$(echo "$R" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(" | ".join(str(r[k]) for k in ("bucket_spare_contents", "bucket_marked", "bucket_deleted")))')
  B=$(pack_bytes "$WORK/a")
  say "| strata gc $run | $(secs "$t0" "$t1") | $F | $B | $(python3 -c "print(f'{$B/$ALONE:.3f}')") |"
done
check_reads "$WORK/a"
check_reads "$WORK/b"
kill -TERM "$PA" "$PB"; wait "$PA" "$PB" || true
start "$WORK/cold" twin; PC=$PID
check_reads "$WORK/cold"
kill -TERM "$PC"; wait "$PC" || true
say ""
say "A, B (each following its own copy until the collection) and an empty data dir read all ${#LAYERS[@]} layers back exact."
