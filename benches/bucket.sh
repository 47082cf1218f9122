#!/usr/bin/env bash
# benches/bucket.sh CORPUS_DIR [WORK_DIR]
#
# strata on S3-compatible object storage: the distinct layer tars of a corpus
# (shared/corpus/make-corpus.sh) pushed into strata on local disk, into strata
# with --store s3:// on a three-node Garage cluster on this machine
# (tests/garage/cluster.sh), and into restic 0.14 with its S3 backend on the
# same cluster, in one run. Then, on Garage: the index rebuilt from the bucket
# by a daemon with an empty data directory (seconds per GB stored), and a cold
# read of every layer through that daemon (empty block cache).
#
# Environment: STRATA (binary; default: cargo build --release), LIMIT (first
# N layers), SKIP_RESTIC=1, ROUNDS (default 1): the two ingests run ROUNDS
# times, interleaved (local, Garage, local, Garage, ...), each on a fresh
# store (a new data directory; on Garage also a new bucket prefix), since
# the local figure alone moves a lot from run to run; every round is
# reported, with the best of each side and their ratio. The reads, bytes
# stored, the rebuild and restic are measured once, on the last round's
# stores. Prints a markdown report, also WORK_DIR/report.md.
set -euo pipefail

CORPUS=$(realpath "${1:?usage: benches/bucket.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench-bucket}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
# shellcheck source=benches/common.sh
. "$HERE/common.sh"
corpus_layers "$CORPUS"

# The cluster; stopped on any way out.
garage_start "${GARAGE_BASE_PORT:-25000}"
gcli() { "$GARAGE_BIN" -c "$G/n1.toml" "$@"; }
gcli bucket create restic >/dev/null
gcli bucket allow --read --write --owner restic --key strata-key >/dev/null
# Garage counts a bucket's bytes in the background: wait until it settles.
bucket_bytes() {
  local last=-1 now
  for _ in $(seq 60); do
    now=$(gcli json-api GetBucketInfo "{\"globalAlias\":\"$1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
    [ "$now" = "$last" ] && { echo "$now"; return; }
    last=$now; sleep 2
  done
  echo "$last"
}

say "# bucket benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "corpus: ${#LAYERS[@]} distinct layer tars, $TOTAL bytes; $(nproc) cores; strata $("$STRATA" --version); Garage 2.5.0, 3 nodes on 127.0.0.1 (replication 3, consistent)"
say ""

push_all() { local t0 t1; t0=$(now); "$STRATA" push "${LAYERS[@]}" >"$1"; t1=$(now); mbps "$TOTAL" "$t0" "$t1"; }
read_all() {
  local t0 t1 ok=0 i
  mapfile -t DIGESTS < <(cut -d' ' -f1 "$1")
  t0=$(now)
  for i in "${!LAYERS[@]}"; do
    got=$("$STRATA" cat "${DIGESTS[$i]}" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "${DIGESTS[$i]}" ] && ok=$((ok + 1))
  done
  t1=$(now)
  [ "$ok" = "${#LAYERS[@]}" ] || { echo "only $ok of ${#LAYERS[@]} layers read back exact" >&2; exit 1; }
  mbps "$TOTAL" "$t0" "$t1"
}

ROUNDS=${ROUNDS:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS=$ROUNDS: expected a positive number" >&2; exit 2; }
S3ARGS=(--metrics-addr off --s3-endpoint "$EP" --s3-region garage)
# CPU seconds (user + system) of processes, from /proc: the cluster shares
# this machine's cores with strata.
cpu_of() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; python3 -c "print(f'{$t/$(getconf CLK_TCK):.1f}')"; }
GPIDS=$(cat "$G"/n*.pid)
L_INS=(); L_CPUS=(); B_INS=(); S_CPUS=(); G_CPUS=()
for r in $(seq "$ROUNDS"); do
  last=$([ "$r" = "$ROUNDS" ] && echo 1 || echo 0)
  # ---------------------------------------------------------- strata, local disk
  D=$WORK/local-$r
  # No dense packs: the bucket has none (its pieces are shared), and an idle
  # densify would rewrite packs during the read and the measure.
  strata_start "$D" --metrics-addr off --dense-level 0
  L_CPU0=$(cpu_of "$PID")
  L_INS+=("$(push_all "$WORK/local-push.txt")")
  L_CPUS+=("$(python3 -c "print(f'{$(cpu_of "$PID")-$L_CPU0:.1f}')")")
  if [ "$last" = 1 ]; then
    L_OUT=$(read_all "$WORK/local-push.txt")
    L_PACKS=$(du -sb "$D/packs" | cut -f1)
  fi
  strata_stop
  [ "$last" = 1 ] || rm -rf "$D"
  # ---------------------------------------------------------- strata, Garage
  STORE=s3://strata/bench-$r
  D=$WORK/bucket-$r
  strata_start "$D" --store "$STORE" "${S3ARGS[@]}"
  # shellcheck disable=SC2086
  G_CPU0=$(cpu_of $GPIDS); S_CPU0=$(cpu_of "$PID")
  B_INS+=("$(push_all "$WORK/bucket-push.txt")")
  # shellcheck disable=SC2086
  G_CPUS+=("$(python3 -c "print(f'{$(cpu_of $GPIDS)-$G_CPU0:.1f}')")")
  S_CPUS+=("$(python3 -c "print(f'{$(cpu_of "$PID")-$S_CPU0:.1f}')")")
  if [ "$last" = 1 ]; then
    B_WARM=$(read_all "$WORK/bucket-push.txt")
    STATS=$("$STRATA" stats --json)
    B_BYTES=$(echo "$STATS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bucket_bytes"])')
    B_PACKS=$(echo "$STATS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bucket_pack_bytes"])')
    B_OBJECTS=$(echo "$STATS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bucket_objects"])')
  fi
  strata_stop
  [ "$last" = 1 ] || rm -rf "$D"
done
# An empty data directory on the last round's bucket prefix: the index
# rebuilt from the bucket, then cold reads.
D=$WORK/bucket-cold
t0=$(now); strata_start "$D" --store "$STORE" "${S3ARGS[@]}"; t1=$(now)
REBUILD=$(secs "$t0" "$t1")
B_COLD=$(read_all "$WORK/bucket-push.txt")
strata_stop
best() { printf '%s\n' "$@" | sort -n | tail -1; }
L_IN=$(best "${L_INS[@]}"); B_IN=$(best "${B_INS[@]}")

BEST=; [ "$ROUNDS" = 1 ] || BEST=" (best of $ROUNDS)"
say "| | ingest MB/s | read MB/s | bytes stored |"
say "|---|---|---|---|"
say "| strata, local disk | $L_IN$BEST | $L_OUT | packs $L_PACKS |"
say "| strata, --store s3:// on Garage | $B_IN$BEST | $B_WARM (own data dir), $B_COLD (cold: empty data dir) | bucket $B_BYTES ($B_OBJECTS objects; packs $B_PACKS) |"

if [ -z "${SKIP_RESTIC:-}" ]; then
  export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic-cache
  R=s3:$EP/restic/repo
  restic init -q --repository-version 2 -r "$R" >/dev/null
  t0=$(now)
  for f in "${LAYERS[@]}"; do
    restic -q -r "$R" backup --compression auto --stdin --stdin-filename "$(basename "$f")" <"$f" >/dev/null
  done
  t1=$(now)
  R_IN=$(mbps "$TOTAL" "$t0" "$t1")
  t0=$(now)
  for f in "${LAYERS[@]}"; do
    n=$(basename "$f"); restic -q -r "$R" dump --path "/$n" latest "/$n" >/dev/null
  done
  t1=$(now)
  R_OUT=$(mbps "$TOTAL" "$t0" "$t1")
  R_BYTES=$(bucket_bytes restic)
  say "| restic 0.14, S3 backend on Garage (v2, compression auto) | $R_IN | $R_OUT (dump) | bucket $R_BYTES |"
  say ""
  say "ratios in this run: ingest on Garage ×$(python3 -c "print(f'{$B_IN/$L_IN:.2f}')") strata local, ×$(python3 -c "print(f'{$B_IN/$R_IN:.2f}')") restic on Garage;"
  say "bucket bytes ×$(python3 -c "print(f'{$B_BYTES/$R_BYTES:.3f}')") restic's, ×$(python3 -c "print(f'{$B_PACKS/$L_PACKS:.3f}')") (packs) strata's local packs;"
else
  say ""
  say "ratios in this run: ingest on Garage ×$(python3 -c "print(f'{$B_IN/$L_IN:.2f}')") strata local; bucket packs ×$(python3 -c "print(f'{$B_PACKS/$L_PACKS:.3f}')") local packs;"
fi
say ""
say "ingest rounds, interleaved (local, then Garage; fresh stores each time):"
say ""
say "| round | local MB/s | local: strata CPU s | Garage MB/s | ×local | Garage: strata CPU s | Garage nodes CPU s |"
say "|---:|---:|---:|---:|---:|---:|---:|"
for i in "${!L_INS[@]}"; do
  say "| $((i + 1)) | ${L_INS[$i]} | ${L_CPUS[$i]} | ${B_INS[$i]} | $(python3 -c "print(f'{${B_INS[$i]}/${L_INS[$i]}:.2f}')") | ${S_CPUS[$i]} | ${G_CPUS[$i]} |"
done
say "| best | $L_IN | | $B_IN | $(python3 -c "print(f'{$B_IN/$L_IN:.2f}')") | | |"
say ""
say "CPU during strata's ingest on Garage (per round above): strata and the three Garage nodes share the same $(nproc) cores."
say "index rebuilt from the bucket by an empty data dir: $REBUILD s for $B_BYTES bucket bytes ($(python3 -c "print(f'{$REBUILD/($B_BYTES/1e9):.2f}')") s per GB stored, daemon start included)."
