#!/usr/bin/env bash
# benches/compressed.sh CORPUS_DIR [WORK_DIR]
#
# Compressed layers, in one run:
# 1. The corpus's OCI images as they are (every blob of images/ and images-zstd/,
#    gzip and zstd layers as their tools wrote them): bytes on disk against the
#    sum of the blobs (what containerd or a registry keeps) and against the same
#    layers pushed as plain tars; blobs per strategy; ingest and read throughput.
# 2. The corpus's layer tars (SUBSET_MB of them, default 600) compressed by
#    producers strata can rebuild (Python's gzip, pigz, GNU gzip, zstd, Go's
#    compress/gzip, klauspost's pgzip): per
#    producer, the strategy used, rebuild data as a share of the compressed
#    size (total and worst blob), ingest and read throughput.
# 3. The same compressions pushed after their plain tars into one store
#    (and the reverse order): the bytes each producer's variants add.
# Every blob read back is checked against its digest.
#
# Environment: STRATA (binary; default: cargo build --release), SUBSET_MB,
# PRODUCERS (default "go-6 pgzip-5 python-gzip-6 pigz-6 gzip-6 zstd-3 zstd-9"),
# DENSE=0 (figures of packs as ingest wrote them, not densified).
# Prints a markdown report and writes it to WORK_DIR/report.md.
set -euo pipefail

CORPUS=$(realpath "${1:?usage: benches/compressed.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench-compressed}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SUBSET_MB=${SUBSET_MB:-600}
PRODUCERS=${PRODUCERS:-go-6 pgzip-5 python-gzip-6 pigz-6 gzip-6 zstd-3 zstd-9}
for t in python3 sha256sum pigz gzip zstd go; do
  command -v "$t" >/dev/null || { echo "missing $t (bash .ci/deps)" >&2; exit 1; }
done

rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
# The Go producers: the same small programs the tests use.
(cd "$ROOT/tests/go/gogzip" && GO111MODULE=off go build -o "$WORK/gogzip" .)
(cd "$ROOT/tests/go/kpgzip" && GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$WORK/kpgzip" .)
# shellcheck source=benches/common.sh
. "$HERE/common.sh"
sum_sizes() { local t=0; for f in "$@"; do t=$((t + $(stat -c %s "$f"))); done; echo $t; }


# push_all LIST_FILE: pushes every file, records digests in LIST_FILE.digests.
push_all() {
  xargs -a "$1" -d '\n' "$STRATA" push --json > "$1.push.json"
  python3 -c "import json,sys; [print(r['digest']) for r in json.load(open(sys.argv[1]))]" "$1.push.json" > "$1.digests"
}

# read_all LIST_FILE: reads every pushed blob back, checking its digest.
read_all() {
  paste -d' ' "$1.digests" "$1" | while read -r d f; do
    got=$("$STRATA" cat "$d" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "$d" ] || { echo "READ MISMATCH $f" >&2; exit 1; }
  done
}

# blob_figures LIST_FILE: strategy, kept and extra bytes of each pushed blob.
blob_figures() {
  while read -r d; do "$STRATA" stat --json "$d"; done < "$1.digests" | python3 -c '
import json, sys
dec = json.JSONDecoder(); text = sys.stdin.read(); i = 0; rows = []
while i < len(text):
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    o, i = dec.raw_decode(text, i); rows.append(o)
size = sum(r["size"] for r in rows); extra = sum(r["extra_bytes"] for r in rows)
by = {}
for r in rows: by[r["strategy"] or "none"] = by.get(r["strategy"] or "none", 0) + 1
kept = sorted({r["kept"] for r in rows if r["kept"]})
worst = max((r["extra_bytes"] / max(r["size"], 1) for r in rows if r["strategy"] in ("replay", "preflate")), default=0)
gz = [r for r in rows if r.get("codec") == "gzip"]
print(json.dumps({"blobs": len(rows), "size": size, "extra": extra, "by": by, "kept": kept, "worst": worst,
                  "gzip": len(gz), "gzip_replay": sum(r["strategy"] == "replay" for r in gz)}))
'
}

say "# compressed-layers benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "$(nproc) cores; strata $("$STRATA" --version)"
say ""

# Packs as a daemon leaves them once pushes pause: rewritten dense
# (src/store/densify.rs), here on demand before each figure. DENSE=0 skips it.
settle() { if [ "${DENSE:-1}" = 1 ]; then "$STRATA" gc >/dev/null; fi; }

# --- 1. the corpus's images as they are -------------------------------------
mapfile -t LAYERS < <(awk -F'\t' 'NR>1 && !seen[$4]++ {print $4}' "$CORPUS/corpus.tsv" | sed "s|^|$CORPUS/|")
printf '%s\n' "${LAYERS[@]}" > "$WORK/tars.list"
strata_start "$WORK/tars"
push_all "$WORK/tars.list"
settle
TAR_STATS=$("$STRATA" stats --json)
strata_stop

# images_part TITLE NAME DIR...: every distinct blob under the OCI layouts in
# CORPUS/DIR..., pushed, read back and checked.
images_part() {
  local title=$1 name=$2; shift 2
  local dirs=() d
  for d in "$@"; do [ -d "$CORPUS/$d" ] && dirs+=("$CORPUS/$d"); done
  find "${dirs[@]}" -path '*/blobs/sha256/*' -type f -printf '%f %p\n' \
    | sort -u -k1,1 | cut -d' ' -f2 > "$WORK/$name.list"
  mapfile -t BLOBS < "$WORK/$name.list"
  local bytes; bytes=$(sum_sizes "${BLOBS[@]}")
  strata_start "$WORK/$name"
  local t0 t1 t2
  t0=$(now); push_all "$WORK/$name.list"; t1=$(now)
  read_all "$WORK/$name.list"; t2=$(now)
  settle
  local st fig; st=$("$STRATA" stats --json); fig=$(blob_figures "$WORK/$name.list")
  strata_stop
  python3 - "$title" "$bytes" "${#BLOBS[@]}" "$st" "$TAR_STATS" "$fig" "$t0" "$t1" "$t2" <<'EOF' | tee -a "$REPORT"
import json, sys
title, blob_bytes, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
img, tar, fig = json.loads(sys.argv[4]), json.loads(sys.argv[5]), json.loads(sys.argv[6])
t0, t1, t2 = map(float, sys.argv[7:10])
print(f"## {title}")
print()
print(f"{n} distinct blobs, {blob_bytes/1e6:.1f} MB (what containerd or a registry keeps)")
print()
print("| store | bytes on disk | vs sum of blobs |")
print("|---|---|---|")
print(f"| strata, the blobs as they are | {img['bytes_on_disk']/1e6:.1f} MB | {img['bytes_on_disk']/blob_bytes:.3f} |")
print(f"| strata, every corpus layer as a plain tar | {tar['bytes_on_disk']/1e6:.1f} MB | {tar['bytes_on_disk']/blob_bytes:.3f} |")
print()
gz = fig["gzip"]
print(f"blobs per strategy: {fig['by']}; gzip blobs {gz}, replayed {fig['gzip_replay']} ({100*fig['gzip_replay']/max(gz,1):.1f} %); rebuild bytes {img['rebuild_bytes']/1e6:.1f} MB; kept as: {', '.join(fig['kept']) or '-'}")
print()
print(f"ingest {blob_bytes/1e6/(t1-t0):.0f} MB/s ({t1-t0:.1f} s); read back and check {blob_bytes/1e6/(t2-t1):.0f} MB/s ({t2-t1:.1f} s)")
print()
EOF
}
images_part "1a. The corpus's gzip images as umoci wrote them (pgzip)" images images
images_part "1b. All the corpus's images (umoci/pgzip gzip, skopeo zstd)" all images images-zstd

# --- 2. layer tars compressed by producers strata replays --------------------
: > "$WORK/subset.list"; acc=0
for f in "${LAYERS[@]}"; do
  s=$(stat -c %s "$f")
  [ $((acc + s)) -gt $((SUBSET_MB * 1000000)) ] && continue
  echo "$f" >> "$WORK/subset.list"; acc=$((acc + s))
done
say "## 2. Layer tars compressed by producers strata can rebuild"
say ""
say "$(wc -l < "$WORK/subset.list") layer tars, $((acc / 1000000)) MB plain"
say ""
strata_start "$WORK/subset-tars"
push_all "$WORK/subset.list"
settle
SUB_DISK=$("$STRATA" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_on_disk"])')
strata_stop
say "The same tars pushed plain: $((SUB_DISK / 1000000)) MB on disk."
say ""
say "| producer | compressed MB | strategy | kept as | rebuild data / compressed (all, worst blob) | on disk vs plain tars | ingest MB/s | read MB/s |"
say "|---|---|---|---|---|---|---|---|"
for p in $PRODUCERS; do
  dir=$WORK/$p; mkdir -p "$dir.files"; : > "$dir.list"
  while read -r f; do
    out=$dir.files/$(basename "$f").z
    case $p in
      python-gzip-*) python3 -c "import sys,gzip,shutil
with open(sys.argv[1],'rb') as i, gzip.GzipFile(sys.argv[2],'wb',int(sys.argv[3])) as o: shutil.copyfileobj(i,o,1<<20)" "$f" "$out" "${p##*-}" ;;
      pigz-*) pigz -n -c "-${p##*-}" < "$f" > "$out" ;;
      gzip-*) gzip -n -c "-${p##*-}" < "$f" > "$out" ;;
      zstd-*) zstd -q -c "-${p##*-}" < "$f" > "$out" ;;
      go-*) "$WORK/gogzip" -mode gzip -level "${p##*-}" < "$f" > "$out" ;;
      pgzip-*) "$WORK/kpgzip" -mode pgzip -level "${p##*-}" < "$f" > "$out" ;;
    esac
    echo "$out" >> "$dir.list"
  done < "$WORK/subset.list"
  mapfile -t FILES < "$dir.list"
  bytes=$(sum_sizes "${FILES[@]}")
  strata_start "$dir"
  t0=$(now); push_all "$dir.list"; t1=$(now)
  read_all "$dir.list"; t2=$(now)
  fig=$(blob_figures "$dir.list")
  settle
  disk=$("$STRATA" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_on_disk"])')
  strata_stop
  python3 - "$p" "$bytes" "$fig" "$t0" "$t1" "$t2" "$disk" "$SUB_DISK" <<'EOF' | tee -a "$REPORT"
import json, sys
p, b, fig = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
t0, t1, t2 = map(float, sys.argv[4:7])
disk, plain = int(sys.argv[7]), int(sys.argv[8])
by = ", ".join(f"{k} {v}" for k, v in fig["by"].items())
print(f"| {p} | {b/1e6:.1f} | {by} | {', '.join(fig['kept'])} | {100*fig['extra']/b:.3f} %, {100*fig['worst']:.3f} % | {disk/plain:.4f} | {b/1e6/(t1-t0):.1f} | {b/1e6/(t2-t1):.1f} |")
EOF
done
say ""
say "Throughputs count compressed bytes; reads pipe each blob through sha256sum."

# --- 3. compressions of stored tars, in one store ----------------------------
# One content per tar: the subset's plain tars first, then every producer's
# compressions of them into the same store (each read back and checked);
# bytes on disk after each clean stop (the index flushed). Then the reverse
# order in a second store: every compression first, the plain tars last.
disk_of() { du -sb "$1" | cut -f1; }
say ""
say "## 3. Compressions of stored tars, in one store"
say ""
V=$WORK/variants
strata_start "$V"; push_all "$WORK/subset.list"; settle; strata_stop
prev=$(disk_of "$V")
say "The plain tars first: $((prev / 1000000)) MB on disk. Then each producer's compressions of them:"
say ""
say "| producer | compressed MB | bytes on disk added | added / compressed |"
say "|---|---|---|---|"
for p in $PRODUCERS; do
  mapfile -t FILES < "$WORK/$p.list"
  bytes=$(sum_sizes "${FILES[@]}")
  strata_start "$V"; push_all "$WORK/$p.list"; read_all "$WORK/$p.list"; settle; strata_stop
  cur=$(disk_of "$V")
  say "| $p | $(python3 -c "print(f'{$bytes/1e6:.1f}')") | $((cur - prev)) | $(python3 -c "print(f'{100*($cur-$prev)/$bytes:.3f} %')") |"
  prev=$cur
done
R=$WORK/variants-reversed
strata_start "$R"
for p in $PRODUCERS; do push_all "$WORK/$p.list"; done
settle
strata_stop
before=$(disk_of "$R")
strata_start "$R"; push_all "$WORK/subset.list"; read_all "$WORK/subset.list"; settle; strata_stop
after=$(disk_of "$R")
say ""
say "Reversed, in a second store: every compression first ($((before / 1000000)) MB on disk), then the plain tars: $((after - before)) bytes added."
