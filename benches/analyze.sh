#!/usr/bin/env bash
# benches/analyze.sh CORPUS_DIR [WORK_DIR]
#
# `strata analyze` on the corpus, in one run:
# 1. every OCI image of the corpus (images/ and images-zstd/): run time, peak
#    RSS, the bytes it predicts a store would keep, and what a daemon really
#    stores after `strata import` of the same images;
# 2. the corpus's plain layer tars as layer files: analysis throughput;
# 3. the gzip images alone: throughput and the decoder the report names.
# Prints a markdown report and writes it to WORK_DIR/report.md.
#
# Environment: STRATA (binary; default: cargo build --release).
set -euo pipefail

CORPUS=$(realpath "${1:?usage: benches/analyze.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench-analyze}")
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
# shellcheck source=benches/common.sh
. "$HERE/common.sh"

IMAGES=()
for d in "$CORPUS"/images/* "$CORPUS"/images-zstd/*; do [ -f "$d/index.json" ] && IMAGES+=("$d"); done
mapfile -t TARS < <(awk -F'\t' 'NR>1 && !seen[$4]++ {print $4}' "$CORPUS/corpus.tsv" | sed "s|^|$CORPUS/|")

# timed NAME ARGS...: runs `strata analyze ARGS --json` under /usr/bin/time,
# leaving the report in WORK/NAME.json and "seconds peak_kib" in WORK/NAME.time.
timed() {
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$WORK/$name.time" "$STRATA" analyze "$@" --json >"$WORK/$name.json"
}

say "# strata analyze on the corpus $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before; $("$STRATA" --version)"
say ""

timed all "${IMAGES[@]}"
strata_start "$WORK/daemon"
"$STRATA" import "${IMAGES[@]}" >"$WORK/import.txt"
ACTUAL=$("$STRATA" stats --json)
strata_stop
timed tars "${TARS[@]}"
GZ=(); for d in "$CORPUS"/images/*; do [ -f "$d/index.json" ] && GZ+=("$d"); done
timed gzip "${GZ[@]}"

python3 - "$WORK" "$ACTUAL" "${#IMAGES[@]}" "${#TARS[@]}" <<'EOF' | tee -a "$REPORT"
import json, sys
work, actual, n_img, n_tar = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(name):
    r = json.load(open(f"{work}/{name}.json"))
    secs, kib = open(f"{work}/{name}.time").read().split()
    return r, float(secs), int(kib)
allr, t_all, m_all = load("all")
s = allr["settings"][0]
pred = s["strata"]["total"]["bytes"]
disk = actual["bytes_on_disk"]
print(f"## 1. All {n_img} images of the corpus")
print()
print(f"{len(allr['images'])} images, {allr['blobs']} distinct blobs; kept apart {s['compressed_total']/1e6:.1f} MB compressed, {s['plain_total']/1e6:.1f} MB plain")
print()
print("| level | bytes | of compressed | of plain |")
print("|---|---|---|---|")
for k, label in (("layer_level", "layer-level dedup"), ("file_level", "file-level dedup"), ("chunk_level", "chunk-level dedup")):
    l = s[k]
    print(f"| {label} | {l['bytes']/1e6:.1f} MB | {100*l['vs_compressed']:.1f} % | {100*l['vs_plain']:.1f} % |")
t = s["strata"]["total"]
print(f"| strata would store | {t['bytes']/1e6:.1f} MB | {100*t['vs_compressed']:.1f} % | {100*t['vs_plain']:.1f} % |")
print()
print(f"analyze: {t_all:.1f} s, peak RSS {m_all/1024:.0f} MiB. Predicted {pred:,} bytes; "
      f"the daemon after `strata import` of the same images: {disk:,} bytes on disk "
      f"(packs {actual['pack_bytes']:,} + index {actual['index_bytes']:,}): prediction / actual = {pred/disk:.4f}")
print()
for name, title in (("tars", f"2. The {n_tar} plain layer tars"), ("gzip", "3. The gzip (pgzip) images alone")):
    r, secs, kib = load(name)
    st = r["settings"][0]
    # Each distinct blob is read once: its plain bytes are the work done.
    plain = st["layer_level"]["bytes"]
    print(f"## {title}")
    print()
    print(f"{r['blobs']} distinct blobs, {plain/1e6:.1f} MB plain: {secs:.1f} s, "
          f"**{plain/1e6/secs:.0f} MB/s of plain bytes**, peak RSS {kib/1024:.0f} MiB")
    print()
    speed = r.get("inflate_mb_per_s")
    print(f"decoding: {r['inflate_backend']}" + (f" ({speed:.0f} MB/s of plain output, decode and prove)" if speed else ""))
    print()
EOF
