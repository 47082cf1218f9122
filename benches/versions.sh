#!/usr/bin/env bash
# benches/versions.sh [WORK_DIR]
#
# A version series: 10 successive versions of one application layer (Django
# 4.2.0..4.2.9 with numpy 2.1.0..2.2.5, installed and byte-compiled as an image
# build would; benches/versions.py build), pushed in order into a fresh strata
# daemon, and the same tars into borg (zstd,3). Reports:
# - per version: tar bytes, the bytes each push added, files changed under the
#   same path and files under new paths;
# - all 10 stored: strata's data dir (dense packs, daemon stopped) against the
#   file-level reference (benches/file_reference.py) and borg;
# - the near-duplicates (same path, other content: recompiled .pyc, rebuilt
#   .so, edited .py): plain zstd -3 of them against `zstd --patch-from` deltas
#   on the previous version's file, i.e. what delta storage would save.
#
# Environment: STRATA (binary; default: cargo build --release), VERSIONS_CACHE
# (wheels and layer tars, reused; default /var/tmp/strata-versions).
# Prints a markdown report and writes it to WORK_DIR/report.md.
set -euo pipefail

WORK=$(realpath -m "${1:-/var/tmp/strata-bench-versions}")
CACHE=${VERSIONS_CACHE:-/var/tmp/strata-versions}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
for t in borg python3 zstd tar sha256sum; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install borgbackup zstd)" >&2; exit 1; }
done

mapfile -t LAYERS < <(python3 "$HERE/versions.py" build "$CACHE")
rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
# shellcheck source=benches/common.sh
. "$HERE/common.sh"
# A private copy: a build replacing the binary mid-run would mix versions.
BUILT=$(date -u -r "$STRATA" +%Y-%m-%dT%H:%MZ)
cp "$STRATA" "$WORK/strata-bin"; STRATA=$WORK/strata-bin
bytes_of() { du -sb "$1" | cut -f1; }

say "# version series benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "${#LAYERS[@]} layer tars ($(dirname "${LAYERS[0]}")); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before; $("$STRATA" --version) (binary of $BUILT)"
say ""

# ---------------------------------------------------------------- strata
# One push per version, in order, so each NEW-BYTES is what that version adds.
D=$WORK/strata
# No metrics listener: another bench's daemon may hold the default port.
strata_start "$D" --metrics-addr off
t0=$(now)
for f in "${LAYERS[@]}"; do "$STRATA" push "$f" >>"$WORK/push.txt"; done
t1=$(now)
mapfile -t DIGESTS < <(awk '{print $1}' "$WORK/push.txt")
# Dense packs, as the daemon leaves them once pushes pause.
"$STRATA" gc --json >"$WORK/gc.json"
ok=0
for i in "${!LAYERS[@]}"; do
  got=$("$STRATA" cat "${DIGESTS[$i]}" | sha256sum | cut -d' ' -f1)
  [ "sha256:$(sha256sum <"${LAYERS[$i]}" | cut -d' ' -f1)" = "${DIGESTS[$i]}" ] && [ "sha256:$got" = "${DIGESTS[$i]}" ] && ok=$((ok + 1))
done
"$STRATA" stats --json >"$WORK/strata-stats.json"
strata_stop

# ---------------------------------------------------------------- borg
export BORG_BASE_DIR=$WORK/borg-base BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
G=$WORK/borg; borg init -e none "$G"
t2=$(now)
for f in "${LAYERS[@]}"; do
  name=$(basename "$f" .tar)
  borg create --compression zstd,3 "$G::$name" - <"$f"
done
t3=$(now)

# ---------------------------------------------------------------- reference and near-duplicates
python3 "$HERE/file_reference.py" "${LAYERS[@]}" >"$WORK/reference.json"
python3 "$HERE/versions.py" analyze "$WORK/analysis.json" "${LAYERS[@]}"

python3 - "$WORK" "$(bytes_of "$D")" "$(bytes_of "$D/packs")" "$(bytes_of "$D/index")" "$(bytes_of "$G")" <<'EOF'
import json, sys
work, s, packs, index, borg = sys.argv[1], *map(int, sys.argv[2:])
new = [int(line.split()[2]) for line in open(f"{work}/push.txt")]
gc = json.load(open(f"{work}/gc.json"))
# What densifying did to the packs; if the daemon had already done it, the
# packs at rest over what the pushes added.
dense = (gc["densified_bytes_after"] / gc["densified_bytes_before"]
         if gc.get("densified_bytes_before") else packs / sum(new))
json.dump({"new_bytes": new, "strata_bytes": s, "strata_packs": packs, "strata_index": index,
           "borg_bytes": borg, "reference": json.load(open(f"{work}/reference.json")),
           "dense_ratio": dense},
          open(f"{work}/figures.json", "w"))
EOF
say "exact on read-back: $ok of ${#LAYERS[@]} layers; strata pushes $(secs "$t0" "$t1") s, borg creates $(secs "$t2" "$t3") s"
say ""
python3 "$HERE/versions.py" report "$WORK/analysis.json" "$WORK/figures.json" | tee -a "$REPORT"
say ""
say "strata gc: \`$(tr -d '\n ' <"$WORK/gc.json")\`"
say ""
say "strata stats: \`$(tr -d '\n ' <"$WORK/strata-stats.json")\`"
echo "report: $REPORT" >&2
