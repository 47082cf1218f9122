#!/usr/bin/env bash
# benches/registry_client.sh CORPUS_DIR [WORK_DIR]
#
# strata as a registry client, in one run (issue 15's figures):
# 1. the corpus's OCI images (images/, gzip layers as umoci wrote them) pushed
#    with skopeo to a local Debian docker-registry (plain HTTP, filesystem);
# 2. `skopeo copy docker://... oci:...` of every image (one layout each)
#    against `strata import docker://...` of the same images into a daemon:
#    wall time, CPU (strata: the CLI plus the daemon's own), bytes kept;
#    and `strata import --defer` (layers stored as received, converted in
#    the background): the import's time, then the time until the daemon has
#    converted everything (`pending_conversions` 0) and the bytes then;
# 3. `strata analyze docker://...` against `strata analyze` of the files:
#    wall time, CPU, and whether the figures agree.
# Every imported image's manifest digest is checked against the layout's.
# Prints a markdown report and writes it to WORK_DIR/report.md.
#
# Environment: STRATA (binary; default: cargo build --release).
set -euo pipefail

CORPUS=$(realpath "${1:?usage: benches/registry_client.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench-registry-client}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
# shellcheck source=benches/common.sh
. "$HERE/common.sh"

NAMES=()
for d in "$CORPUS"/images/*; do [ -f "$d/index.json" ] && NAMES+=("$(basename "$d")"); done
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR=127.0.0.1:$PORT
cat >"$WORK/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: $ADDR
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG=$!
trap 'kill $REG 2>/dev/null || true; [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://$ADDR/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

REFS=()
for n in "${NAMES[@]}"; do
  skopeo copy -q --dest-tls-verify=false "oci:$CORPUS/images/$n" "docker://$ADDR/$n:latest"
  REFS+=("docker://$ADDR/$n:latest")
done

# cpu PID: user+sys seconds the process has used so far.
cpu() { awk -v t="$(getconf CLK_TCK)" '{print ($14+$15)/t}' "/proc/$1/stat"; }
# timed NAME CMD...: wall and user+sys seconds of CMD into WORK/NAME.time.
timed() {
  local name=$1; shift
  /usr/bin/time -f '%e %U %S' -o "$WORK/$name.time" "$@"
}
wall() { cut -d' ' -f1 "$WORK/$1.time"; }
usr_sys() { awk '{printf "%.2f", $2+$3}' "$WORK/$1.time"; }

say "# strata as a registry client $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before; $("$STRATA" --version); $(skopeo --version)"
say "${#NAMES[@]} images ($(du -sb "$CORPUS/images" | cut -f1) bytes of OCI layouts) pushed to docker-registry $(dpkg-query -W -f='${Version}' docker-registry) on $ADDR."
say ""

# 2. skopeo to directories, then strata import.
mkdir -p "$WORK/skopeo"
timed skopeo bash -c "for n in ${NAMES[*]}; do skopeo copy -q --src-tls-verify=false docker://$ADDR/\$n:latest oci:$WORK/skopeo/\$n:latest; done"
SKOPEO_BYTES=$(du -sb "$WORK/skopeo" | cut -f1)

strata_start "$WORK/strata"
D0=$(cpu "$PID")
timed import "$STRATA" import --json --tls-verify=false "${REFS[@]}" >"$WORK/import.json" 2>"$WORK/import.err"
D1=$(cpu "$PID")
strata_stop
STRATA_BYTES=$(du -sb "$WORK/strata" | cut -f1)
IMPORT_CPU=$(python3 -c "print(f'{$(usr_sys import)+$D1-$D0:.2f}')")

# Every image under its reference, with the manifest its layout names.
python3 - "$WORK/import.json" "$CORPUS/images" "$ADDR" <<'PY'
import json, sys, os
rows = json.load(open(sys.argv[1]))
got = {r["name"]: r["manifest"] for r in rows}
for n in os.listdir(sys.argv[2]):
    want = json.load(open(os.path.join(sys.argv[2], n, "index.json")))["manifests"][0]["digest"]
    name = f"{sys.argv[3]}/{n}:latest"
    assert got.get(name) == want, (name, got.get(name), want)
print(f"{len(rows)} images, every manifest digest as pushed")
PY

say "| | wall s | CPU s (user+sys) | bytes kept |"
say "|---|---|---|---|"
say "| \`skopeo copy docker:// oci:\` (one layout per image) | $(wall skopeo) | $(usr_sys skopeo) | $SKOPEO_BYTES |"
say "| \`strata import docker://...\` (CLI + daemon) | $(wall import) | $IMPORT_CPU | $STRATA_BYTES |"
say "| ratio strata / skopeo | $(python3 -c "print(f'{$(wall import)/$(wall skopeo):.2f}')") | $(python3 -c "print(f'{$IMPORT_CPU/$(usr_sys skopeo):.2f}')") | $(python3 -c "print(f'{$STRATA_BYTES/$SKOPEO_BYTES:.3f}')") |"

# The same with --defer: the import, then the background conversion.
strata_start "$WORK/deferred"
D0=$(cpu "$PID")
T0=$(now)
timed defer "$STRATA" import --defer --json --tls-verify=false "${REFS[@]}" >"$WORK/defer.json" 2>"$WORK/defer.err"
DEFER_BYTES_AT_ONCE=$(du -sb "$WORK/deferred" | cut -f1)
until [ "$("$STRATA" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_conversions"])')" = 0 ]; do sleep 1; done
T1=$(now)
D1=$(cpu "$PID")
strata_stop
DEFER_BYTES=$(du -sb "$WORK/deferred" | cut -f1)
DEFER_CPU=$(python3 -c "print(f'{$(usr_sys defer)+$D1-$D0:.2f}')")
say "| \`strata import --defer docker://...\`: the import | $(wall defer) | | $DEFER_BYTES_AT_ONCE |"
say "| ... until every layer is converted (background, nice 19) | $(secs "$T0" "$T1") | $DEFER_CPU | $DEFER_BYTES |"
say "| ratio --defer import / skopeo | $(python3 -c "print(f'{$(wall defer)/$(wall skopeo):.2f}')") | | |"
say ""

# 3. analyze from the registry, then from the files.
FILES=()
for n in "${NAMES[@]}"; do FILES+=("oci:$CORPUS/images/$n"); done
timed analyze_reg "$STRATA" analyze --json --tls-verify=false "${REFS[@]}" >"$WORK/analyze_reg.json" 2>/dev/null
timed analyze_files "$STRATA" analyze --json "${FILES[@]}" >"$WORK/analyze_files.json" 2>/dev/null
SAME=$(python3 - "$WORK/analyze_reg.json" "$WORK/analyze_files.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
strip = lambda r: [{k: v for k, v in i.items() if k not in ("name", "origin")} for i in r["images"]]
same = strip(a) == strip(b) and all(a[k] == b[k] for k in ("blobs", "distinct_layers", "matrix"))
print("identical" if same else "DIFFERENT")
PY
)
say "| \`strata analyze\` | wall s | CPU s (user+sys) |"
say "|---|---|---|"
say "| files (\`oci:DIR\`) | $(wall analyze_files) | $(usr_sys analyze_files) |"
say "| registry (\`docker://\`) | $(wall analyze_reg) | $(usr_sys analyze_reg) |"
say "| ratio registry / files | $(python3 -c "print(f'{$(wall analyze_reg)/$(wall analyze_files):.2f}')") | |"
say ""
say "Figures of the two analyses: $SAME."
[ "$SAME" = identical ]
