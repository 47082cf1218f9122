#!/usr/bin/env bash
# benches/corpus.sh CORPUS_DIR [WORK_DIR]
#
# The corpus benchmark: pushes every distinct plain layer tar of a corpus built by
# shared/corpus/make-corpus.sh into a fresh strata daemon, pushes them all again,
# reads each back and checks its sha256, and runs restic (repository v2,
# compression auto) and borg (zstd,3) on the same files in the same run, so
# ratios between tools are taken under the same machine noise.
#
# Also sweeps chunk sizes and compression block sizes (bytes on disk and ingest
# time for each), and measures the daemon's peak RSS while it ingests one
# generated 4 GiB tar.
#
# Also the data directory at rest (packs, index) and the file-level reference
# (benches/file_reference.py: distinct file bodies and headers, zstd -3 in
# 4 MiB frames).
#
# Environment: STRATA (binary; default: cargo build --release), DENSE=0 (no
# densify step before the reads and the bytes at rest), SKIP_PEERS=1,
# SKIP_SWEEP=1, SKIP_BIG=1, SKIP_REFERENCE=1, BIG_GIB (default 4).
# Prints a markdown report and writes it to WORK_DIR/report.md.
set -euo pipefail

CORPUS=$(realpath "${1:?usage: benches/corpus.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
for t in restic borg python3 sha256sum; do
  [ -n "${SKIP_PEERS:-}" ] && [ "$t" != python3 ] && [ "$t" != sha256sum ] && continue
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install restic borgbackup)" >&2; exit 1; }
done

rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
# shellcheck source=benches/common.sh
. "$HERE/common.sh"
# Distinct layer tars, in corpus order.
mapfile -t LAYERS < <(awk -F'\t' 'NR>1 && !seen[$4]++ {print $4}' "$CORPUS/corpus.tsv" | sed "s|^|$CORPUS/|")
TOTAL=0; for f in "${LAYERS[@]}"; do TOTAL=$((TOTAL + $(stat -c %s "$f"))); done

bytes_of() { du -sb "$1" | cut -f1; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }


say "# corpus benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "corpus: ${#LAYERS[@]} distinct layer tars, $TOTAL bytes; $(nproc) cores; strata $("$STRATA" --version)"
say ""

# ---------------------------------------------------------------- strata, default settings
D=$WORK/strata
strata_start "$D"
t0=$(now); "$STRATA" push "${LAYERS[@]}" >"$WORK/push1.txt"; t1=$(now)
"$STRATA" push "${LAYERS[@]}" >"$WORK/push2.txt"; t2=$(now)
mapfile -t DIGESTS < <(cut -d' ' -f1 "$WORK/push1.txt")
# What the daemon does by itself once pushes pause (packs rewritten dense,
# src/store/densify.rs), here on demand and timed, so reads and the bytes at
# rest below are of dense packs. DENSE=0 skips it.
PRE_DENSE=$("$STRATA" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pack_bytes"])')
td0=$(now)
if [ "${DENSE:-1}" = 1 ]; then "$STRATA" gc --json >"$WORK/densify.json"; else echo '{}' >"$WORK/densify.json"; fi
td1=$(now)
t3=$(now); for d in "${DIGESTS[@]}"; do "$STRATA" cat "$d" >/dev/null; done; t4=$(now)
ok=0
for i in "${!LAYERS[@]}"; do
  want=$(sha256sum <"${LAYERS[$i]}" | cut -d' ' -f1)
  got=$("$STRATA" cat "${DIGESTS[$i]}" | sha256sum | cut -d' ' -f1)
  [ "sha256:$want" = "${DIGESTS[$i]}" ] && [ "$want" = "$got" ] && ok=$((ok + 1))
done
"$STRATA" stats --json >"$WORK/strata-stats.json"
S_HWM=$(hwm_kib "$PID")
strata_stop
S_BYTES=$(bytes_of "$D")
S_IN=$(mbps "$TOTAL" "$t0" "$t1"); S_RE=$(mbps "$TOTAL" "$t1" "$t2"); S_OUT=$(mbps "$TOTAL" "$t3" "$t4")
S_T1=$(secs "$t0" "$t1"); S_T2=$(secs "$t1" "$t2")

# ---------------------------------------------------------------- restic
if [ -z "${SKIP_PEERS:-}" ]; then
  export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic-cache
  R=$WORK/restic; restic init -q --repository-version 2 -r "$R" >/dev/null
  R_HWM=0
  t0=$(now)
  for f in "${LAYERS[@]}"; do
    /usr/bin/time -f %M -o "$WORK/rss" restic -q -r "$R" backup --compression auto --stdin --stdin-filename "$(basename "$f")" <"$f" >/dev/null
    R_HWM=$(( $(cat "$WORK/rss") > R_HWM ? $(cat "$WORK/rss") : R_HWM ))
  done
  t1=$(now)
  for f in "${LAYERS[@]}"; do
    n=$(basename "$f"); restic -q -r "$R" dump --path "/$n" latest "/$n" >/dev/null
  done
  t2=$(now)
  R_BYTES=$(bytes_of "$R"); R_IN=$(mbps "$TOTAL" "$t0" "$t1"); R_OUT=$(mbps "$TOTAL" "$t1" "$t2")

  export BORG_BASE_DIR=$WORK/borg-base BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
  G=$WORK/borg; borg init -e none "$G"
  G_HWM=0
  t0=$(now)
  for f in "${LAYERS[@]}"; do
    /usr/bin/time -f %M -o "$WORK/rss" borg create --compression zstd,3 "$G::$(basename "$f")" - <"$f"
    G_HWM=$(( $(cat "$WORK/rss") > G_HWM ? $(cat "$WORK/rss") : G_HWM ))
  done
  t1=$(now)
  for f in "${LAYERS[@]}"; do borg extract --stdout "$G::$(basename "$f")" >/dev/null; done
  t2=$(now)
  G_BYTES=$(bytes_of "$G"); G_IN=$(mbps "$TOTAL" "$t0" "$t1"); G_OUT=$(mbps "$TOTAL" "$t1" "$t2")
fi

say "## Ingest, read-back and size (default settings: chunks 16K/64K/256K, 2 MiB blocks, zstd 3)"
say ""
say "exact on read-back: $ok of ${#LAYERS[@]} layers (sha256 of every byte read back)"
say ""
say "| tool | stored bytes | ingest MB/s | re-push MB/s | read MB/s | peak RSS |"
say "|---|---:|---:|---:|---:|---:|"
say "| strata | $S_BYTES | $S_IN (${S_T1} s) | $S_RE (${S_T2} s) | $S_OUT | $((S_HWM / 1024)) MiB (daemon) |"
if [ -z "${SKIP_PEERS:-}" ]; then
  say "| restic 0.14 (v2, compression auto) | $R_BYTES | $R_IN | – | $R_OUT (dump) | $((R_HWM / 1024)) MiB |"
  say "| borg 1.2 (zstd,3) | $G_BYTES | $G_IN | – | $G_OUT (extract) | $((G_HWM / 1024)) MiB |"
  say ""
  say "ratios in this run: strata/borg bytes $(python3 -c "print(f'{$S_BYTES/$G_BYTES:.3f}')"), strata/restic bytes $(python3 -c "print(f'{$S_BYTES/$R_BYTES:.3f}')");"
  say "ingest ×$(python3 -c "print(f'{$S_IN/$R_IN:.2f}')") restic, ×$(python3 -c "print(f'{$S_IN/$G_IN:.2f}')") borg;"
  say "read ×$(python3 -c "print(f'{$S_OUT/$R_OUT:.2f}')") restic dump, ×$(python3 -c "print(f'{$S_OUT/$G_OUT:.2f}')") borg extract;"
fi
say "re-push of stored layers ×$(python3 -c "print(f'{$S_RE/$S_IN:.2f}')") the first push."
say ""
say "dense packs (\`strata gc\` after the pushes, what the daemon does once they pause): $(secs "$td0" "$td1") s; packs $PRE_DENSE bytes before; \`$(tr -d '\n ' <"$WORK/densify.json")\`"
say ""
# The data directory at rest (the daemon stopped, its index flushed): packs
# against index, the index against the logical bytes, and the whole against
# the file-level reference (every distinct file body once plus the headers,
# zstd -3 in 4 MiB frames: benches/file_reference.py).
S_PACKS=$(bytes_of "$D/packs"); S_INDEX=$(bytes_of "$D/index")
say "at rest: packs $S_PACKS, index $S_INDEX ($(python3 -c "print(f'{100*$S_INDEX/$TOTAL:.3f}')") % of the $TOTAL logical bytes)"
if [ -z "${SKIP_REFERENCE:-}" ]; then
  REF=$(python3 "$HERE/file_reference.py" "${LAYERS[@]}")
  REF_TOTAL=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['total'])" "$REF")
  say ""
  say "file-level reference: \`$REF\`; strata $(python3 -c "print(f'{$S_BYTES/$REF_TOTAL:.3f}')") × the reference"
fi
say ""
say "strata stats: \`$(tr -d '\n ' <"$WORK/strata-stats.json")\`"
say ""

# ---------------------------------------------------------------- sweeps
if [ -z "${SKIP_SWEEP:-}" ]; then
  say "## Sweep: chunk sizes and compression blocks (bytes on disk, first-push time)"
  say ""
  say "| chunk sizes | block KiB | chunks | stored bytes | ingest s |"
  say "|---|---:|---:|---:|---:|"
  sweep() {
    local cs=$1 blk=$2 dir=$WORK/sweep-${1//\//-}-$2
    strata_start "$dir" --chunk-sizes "$cs" --block-kib "$blk"
    local a b; a=$(now); "$STRATA" push "${LAYERS[@]}" >/dev/null; b=$(now)
    local chunks; chunks=$("$STRATA" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["chunks"])')
    strata_stop
    say "| $cs | $blk | $chunks | $(bytes_of "$dir") | $(secs "$a" "$b") |"
    rm -rf "$dir"
  }
  for cs in 8K/32K/128K 16K/64K/256K 32K/128K/512K 64K/256K/1M; do sweep "$cs" 2048; done
  for blk in 64 256 1024 4096; do sweep 16K/64K/256K "$blk"; done
  say ""
fi

# ---------------------------------------------------------------- one big tar
if [ -z "${SKIP_BIG:-}" ]; then
  GIB=${BIG_GIB:-4}
  D=$WORK/big; strata_start "$D"
  a=$(now)
  python3 "$HERE/gen_tar.py" --gib "$GIB" | "$STRATA" push - >"$WORK/big.txt"
  b=$(now)
  say "## One generated ${GIB} GiB tar pushed through stdin"
  say ""
  say "peak daemon RSS $(( $(hwm_kib "$PID") / 1024 )) MiB; $(secs "$a" "$b") s; \`$(cat "$WORK/big.txt")\`"
  strata_stop
  rm -rf "$D"
  say ""
fi
echo "report: $REPORT" >&2
