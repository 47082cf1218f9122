#!/usr/bin/env bash
# benches/registry.sh CORPUS_DIR [WORK_DIR]
#
# strata's registry (`serve --registry-listen`) against Debian's docker-registry
# (distribution 2.8, filesystem storage, Debian's default config without its
# htpasswd auth), in one run on the same images, so ratios are taken under the
# same machine noise:
#   1. push: every OCI layout in CORPUS_DIR/images copied with
#      `skopeo copy oci:DIR:latest docker://127.0.0.1:PORT/NAME:latest`, to
#      docker-registry, then to strata; strata's background conversions of the
#      gzip layers are waited for (their time and CPU recorded apart);
#   2. bytes on disk (`du -sb`): docker-registry's root directory; strata's data
#      directory after a `strata gc` (the copies kept as received are garbage
#      once converted), the daemon stopped (its index flushed);
#   3. pull: every image copied back with
#      `skopeo copy docker://127.0.0.1:PORT/NAME:latest dir:OUT/NAME` from
#      docker-registry, from strata just restarted (every converted gzip layer
#      re-encoded as it is sent), from strata again (its caches and the OS page
#      cache warm), and from docker-registry again (how much the noise moves a
#      repeated run).
# After every pull each blob's sha256 is checked against its name and each
# manifest against the corpus's: any difference fails the run. Each phase
# records wall time, the CPU of every skopeo (user + sys, /usr/bin/time) and the
# server's (from /proc), and the load average at its end.
# Environment: STRATA (binary; default: cargo build --release), KEEP=1 keeps the
# registries' data and the pulled images.
# Prints a markdown report and writes it to WORK_DIR/report.md.
set -euo pipefail

CORPUS=$(realpath "${1:?usage: benches/registry.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench-registry}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
for t in skopeo docker-registry python3 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install skopeo docker-registry time)" >&2; exit 1; }
done

rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
# shellcheck source=benches/common.sh
. "$HERE/common.sh"
mapfile -t IMAGES < <(ls "$CORPUS/images")

cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
hwm_mib() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$1/status"; }
DR_PID= PID=
cleanup() {
  local rc=$?
  for p in $DR_PID $PID; do { kill -TERM "$p" && wait "$p"; } 2>/dev/null || true; done
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK/docker-registry/data" "$WORK/strata" "$WORK/pull"; fi
  exit "$rc"
}
trap cleanup EXIT

# Bytes the pulls write: every image's manifest, config and layers.
read -r DISTINCT LOGICAL < <(python3 - "$CORPUS/images" "${IMAGES[@]}" <<'EOF'
import json, os, sys
base, names = sys.argv[1], sys.argv[2:]
seen, distinct, logical = set(), 0, 0
for n in names:
    idx = json.load(open(f"{base}/{n}/index.json"))
    for m in idx["manifests"]:
        man = json.load(open(f"{base}/{n}/blobs/{m['digest'].replace(':', '/')}"))
        for d in [m] + [man["config"]] + man["layers"]:
            logical += d["size"]
            if d["digest"] not in seen:
                seen.add(d["digest"]); distinct += d["size"]
print(distinct, logical)
EOF
)

# verify OUT: every image pulled to OUT/NAME has the corpus's manifest, exactly
# the blobs it names, and each blob's sha256 is its name.
verify() {
  python3 - "$CORPUS/images" "$1" "${IMAGES[@]}" <<'EOF'
import hashlib, json, os, sys
base, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
bad, n = [], 0
for name in names:
    want = json.load(open(f"{base}/{name}/index.json"))["manifests"][0]["digest"]
    d = f"{out}/{name}"
    got = "sha256:" + sha(f"{d}/manifest.json")
    if got != want:
        bad.append(f"{name}: manifest {got}, corpus {want}")
        continue
    man = json.load(open(f"{d}/manifest.json"))
    names_wanted = {x["digest"].split(":")[1] for x in [man["config"]] + man["layers"]}
    files = set(os.listdir(d)) - {"manifest.json", "version"}
    if files != names_wanted:
        bad.append(f"{name}: blobs {sorted(files ^ names_wanted)} missing or extra")
    for f in files & names_wanted:
        n += 1
        if sha(f"{d}/{f}") != f:
            bad.append(f"{name}: blob {f} has sha256 {sha(f'{d}/{f}')}")
if bad:
    sys.exit("pulled blobs differ:\n" + "\n".join(bad))
print(f"{len(names)} manifests and {n} blobs checked")
EOF
}

declare -A WALL SK_CPU SRV_CPU LOAD
# copy_all PHASE SERVER_PID ARGS...: `skopeo copy ARGS` once per image, {} in
# ARGS standing for the image's name; wall time, skopeo's and the server's CPU.
copy_all() {
  local phase=$1 pid=$2; shift 2
  local a b c0 img
  : >"$WORK/time-$phase"
  c0=$(cpu_s "$pid")
  a=$(now)
  for img in "${IMAGES[@]}"; do
    /usr/bin/time -a -o "$WORK/time-$phase" -f "%U %S" skopeo copy -q "${@//\{\}/$img}" >/dev/null
  done
  b=$(now)
  WALL[$phase]=$(secs "$a" "$b")
  SRV_CPU[$phase]=$(python3 -c "print(f'{$(cpu_s "$pid")-$c0:.1f}')")
  SK_CPU[$phase]=$(awk '{s += $1 + $2} END {printf "%.1f", s}' "$WORK/time-$phase")
  LOAD[$phase]=$(cut -d' ' -f1 /proc/loadavg)
}
push_all() { # push_all PHASE PORT SERVER_PID
  copy_all "$1" "$3" --dest-tls-verify=false "oci:$CORPUS/images/{}:latest" "docker://127.0.0.1:$2/{}:latest"
}
pull_all() { # pull_all PHASE PORT SERVER_PID: pulls, checks, removes the copies
  rm -rf "$WORK/pull"; mkdir -p "$WORK/pull"
  copy_all "$1" "$3" --src-tls-verify=false "docker://127.0.0.1:$2/{}:latest" "dir:$WORK/pull/{}"
  CHECKED[$1]=$(verify "$WORK/pull")
  rm -rf "$WORK/pull"
}
declare -A CHECKED

# ---------------------------------------------------------------- the servers
DR=$WORK/docker-registry; mkdir -p "$DR"
DR_PORT=$(free_port)
cat >"$DR/config.yml" <<EOF
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $DR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$DR_PORT
  headers:
    X-Content-Type-Options: [nosniff]
EOF
docker-registry serve "$DR/config.yml" >"$DR/registry.log" 2>&1 &
DR_PID=$!
S=$WORK/strata; S_PORT=$(free_port)
start_strata() { strata_start "$S" --metrics-addr off --registry-listen "127.0.0.1:$S_PORT"; }
start_strata
for port in "$DR_PORT" "$S_PORT"; do
  for _ in $(seq 200); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break; sleep 0.05; done
done

say "# registry benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "${#IMAGES[@]} OCI images from $CORPUS/images (gzip layers as umoci wrote them): $DISTINCT distinct bytes, $LOGICAL bytes pulled per run; $(nproc) cores; strata $("$STRATA" --version) (checkout $(git -C "$ROOT" rev-parse --short HEAD)), $(docker-registry --version | cut -d' ' -f2-), $(skopeo --version)"
say ""

# ---------------------------------------------------------------- push
push_all push.dr "$DR_PORT" "$DR_PID"
push_all push.strata "$S_PORT" "$PID"
t_pushed=$(now); c_pushed=$(cpu_s "$PID")
S_RECEIVED=$(du -sb "$S" | cut -f1)
while [ "$("$STRATA" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_conversions"])')" != 0 ]; do
  sleep 0.5
done
CONVERTED=$(secs "$t_pushed" "$(now)")
CONVERT_CPU=$(python3 -c "print(f'{$(cpu_s "$PID")-$c_pushed:.1f}')")
"$STRATA" gc >/dev/null
"$STRATA" stats --json >"$WORK/strata-stats.json"
S_HWM_PUSH=$(hwm_mib "$PID"); DR_HWM_PUSH=$(hwm_mib "$DR_PID")
strata_stop; PID=
S_BYTES=$(du -sb "$S" | cut -f1)
DR_BYTES=$(du -sb "$DR/data" | cut -f1)

# ---------------------------------------------------------------- pull
mv "$S.log" "$S-push.log"
start_strata
pull_all pull.dr "$DR_PORT" "$DR_PID"
pull_all pull.strata "$S_PORT" "$PID"
pull_all pull.strata2 "$S_PORT" "$PID"
pull_all pull.dr2 "$DR_PORT" "$DR_PID"
S_HWM_PULL=$(hwm_mib "$PID"); DR_HWM=$(hwm_mib "$DR_PID")
strata_stop; PID=
S_BYTES_AFTER=$(du -sb "$S" | cut -f1)

# ---------------------------------------------------------------- report
row() { # row LABEL DR_PHASE STRATA_PHASE TARGET
  say "| $1 | ${WALL[$2]} | ${WALL[$3]} | **$(ratio "${WALL[$3]}" "${WALL[$2]}")** | $4 | ${SRV_CPU[$2]} / ${SRV_CPU[$3]} | ${SK_CPU[$2]} / ${SK_CPU[$3]} | ${LOAD[$2]} / ${LOAD[$3]} |"
}
say "| | docker-registry | strata | strata / docker-registry | target | server CPU s (d-r / strata) | skopeo CPU s (d-r / strata) | load at end (d-r / strata) |"
say "|---|---:|---:|---:|---|---:|---:|---:|"
say "| bytes on disk | $DR_BYTES | $S_BYTES | **$(ratio "$S_BYTES" "$DR_BYTES")** | ≤ 0.75 | | | |"
row "push s" push.dr push.strata "≤ 1.3"
row "pull s (gzip replay)" pull.dr pull.strata "≤ 1.5"
row "pull again s (caches warm)" pull.dr2 pull.strata2 "–"
say ""
say "strata's background conversions of the pushed gzip layers were done $CONVERTED s after its push ended, with $CONVERT_CPU s of its CPU (push + conversions: $(python3 -c "print(f'{${WALL[push.strata]}+$CONVERTED:.2f}')") s, $(ratio "$(python3 -c "print(${WALL[push.strata]}+$CONVERTED)")" "${WALL[push.dr]}") × docker-registry's push); its data directory right after the push, layers as received and the daemon running: $S_RECEIVED bytes; after the pulls, stopped again: $S_BYTES_AFTER bytes."
say ""
say "pull MB/s ($LOGICAL bytes): docker-registry $(mbps "$LOGICAL" 0 "${WALL[pull.dr]}") and $(mbps "$LOGICAL" 0 "${WALL[pull.dr2]}"), strata $(mbps "$LOGICAL" 0 "${WALL[pull.strata]}") and $(mbps "$LOGICAL" 0 "${WALL[pull.strata2]}"). Peak RSS: strata $S_HWM_PUSH MiB (push and conversions), $S_HWM_PULL MiB (pulls); docker-registry $DR_HWM_PUSH MiB after the push, $DR_HWM MiB at the end."
say ""
say "checked after each pull: docker-registry ${CHECKED[pull.dr]}; strata ${CHECKED[pull.strata]}; strata again ${CHECKED[pull.strata2]}; docker-registry again ${CHECKED[pull.dr2]}."
say ""
say "strata stats after the push: \`$(tr -d '\n ' <"$WORK/strata-stats.json")\`"
echo "report: $REPORT" >&2
