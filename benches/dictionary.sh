#!/usr/bin/env bash
# benches/dictionary.sh CORPUS_DIR [WORK_DIR]
#
# Issue 2 asks whether new chunks should be compressed in groups or one by one
# with a zstd dictionary trained on the store. This measures both on the same
# chunks, with the zstd command line (the same libzstd the daemon links):
# the regular files of the first LAYERS (default 4) distinct layer tars, cut
# into pieces of 64 KiB (strata's average chunk; files are cut at their ends,
# as strata's chunks are), then
#   1. each piece alone, zstd -3;
#   2. each piece alone, zstd -3 with a dictionary trained on a sample of the
#      pieces (zstd --train, 112,640 bytes, the CLI's default size);
#   3. the pieces in order, in groups of 2 MiB, zstd -3 (what strata does).
# Prints a markdown table; needs zstd, tar, GNU split and find.
set -euo pipefail
CORPUS=$(realpath "${1:?usage: benches/dictionary.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench-dictionary}")
LAYERS=${LAYERS:-4}
rm -rf "$WORK"; mkdir -p "$WORK/files" "$WORK/pieces"
mapfile -t TARS < <(awk -F'\t' 'NR>1 && !seen[$4]++ {print $4}' "$CORPUS/corpus.tsv" | head -n "$LAYERS" | sed "s|^|$CORPUS/|")
for i in "${!TARS[@]}"; do
  mkdir -p "$WORK/files/$i"
  tar -C "$WORK/files/$i" -xf "${TARS[$i]}" --no-same-owner --no-same-permissions 2>/dev/null || true
done
# Pieces: every regular file cut into 64 KiB pieces, in a stable order.
n=0
while IFS= read -r -d '' f; do
  split -a 4 -d -b 64K "$f" "$WORK/pieces/$(printf %07d $n)-"
  n=$((n + 1))
done < <(find "$WORK/files" -type f -size +0 -print0 | sort -z)
rm -rf "$WORK/files"
PIECES=$(find "$WORK/pieces" -type f | wc -l)
RAW=$(du -sb --apparent-size "$WORK/pieces" | cut -f1)
sum_of() { find "$1" -type f -name "$2" -printf '%s\n' | awk '{s += $1} END {print s}'; }

# 1. one by one
# (zstd 1.5.4 crashes on -r over this many files: batches through xargs)
zst() { local out=$1; shift; mkdir -p "$out"; find "$WORK/pieces" -type f | sort | xargs -n 1000 zstd -q -3 "$@" --output-dir-flat "$out"; }
zst "$WORK/one"
ONE=$(sum_of "$WORK/one" '*.zst')
# 2. one by one with a trained dictionary (trained on every 10th piece)
mkdir -p "$WORK/sample"
find "$WORK/pieces" -type f | sort | awk 'NR % 10 == 0' | xargs -r cp -t "$WORK/sample"
zstd -q --train -r "$WORK/sample" -o "$WORK/dict" >/dev/null 2>&1
DICT=$(stat -c %s "$WORK/dict")
zst "$WORK/withdict" -D "$WORK/dict"
WITH=$(sum_of "$WORK/withdict" '*.zst')
# 3. groups of 2 MiB, in order
mkdir -p "$WORK/groups"
find "$WORK/pieces" -type f | sort | xargs cat | split -b 2M -d -a 6 - "$WORK/groups/g"
mkdir -p "$WORK/groups-z"; find "$WORK/groups" -type f | xargs -n 1000 zstd -q -3 --output-dir-flat "$WORK/groups-z"
GROUPED=$(sum_of "$WORK/groups-z" '*.zst')

echo "# zstd dictionary against 2 MiB groups ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
echo "$LAYERS layer tars, $PIECES pieces of at most 64 KiB, $RAW bytes"
echo
echo "| how | compressed bytes | of the input |"
echo "|---|---:|---:|"
for row in "each piece alone, zstd -3:$ONE" "each piece alone, zstd -3, trained dictionary ($DICT bytes, counted once):$((WITH + DICT))" "2 MiB groups, zstd -3:$GROUPED"; do
  echo "| ${row%%:*} | ${row##*:} | $(python3 -c "print(f'{${row##*:}/$RAW:.3f}')") |"
done
rm -rf "$WORK/pieces" "$WORK/one" "$WORK/withdict" "$WORK/groups" "$WORK/groups-z" "$WORK/sample"
