#!/usr/bin/env bash
# benches/unpack.sh CORPUS_DIR [WORK_DIR]
#
# Unpacking images through containerd 1.7 and 2.x, in one run, three ways:
#   local          containerd's own content store and its walking differ;
#   strata-proxy   strata as the proxy content store, containerd's walking
#                  differ (each gzip layer is rebuilt by strata and decompressed
#                  again by containerd, in 32 KiB reads);
#   strata-differ  strata as the proxy content store and as the proxy differ
#                  (`serve --containerd-diff-socket`): the plain tar goes from
#                  strata's chunks straight into the snapshot.
# Two figures each, overlayfs snapshotter:
#   import+unpack  `ctr images import` of every image (content new, unpacked as
#                  it arrives; strata keeps the layers as received);
#   unpack only    a fresh containerd, `ctr images import --no-unpack`, strata's
#                  background conversions finished, then `ctr images import`
#                  again: the content is present, only the unpack runs.
# Images: $IMAGES (default: six of the corpus). Needs root and the containerd
# builds of `.ci/containerd-versions install`. Environment: STRATA (binary;
# default: cargo build --release), VERSIONS (default "1.7 2"), MODES (default
# "local strata-proxy strata-differ"), SERVE_ARGS (more `strata serve` flags),
# KEEP=1 (keep each run's directories and logs), REPEAT (rounds, default 2).
set -euo pipefail

CORPUS=$(realpath "${1:?usage: benches/unpack.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench-unpack}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
if [ -z "${STRATA:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  STRATA=$CARGO_TARGET_DIR/release/strata
fi
read -r -a IMGS <<<"${IMAGES:-nginx node postgres py-ml py-web tools}"
read -r -a VERS <<<"${VERSIONS:-1.7 2}"
read -r -a MODES <<<"${MODES:-local strata-proxy strata-differ}"
rm -rf "$WORK"; mkdir -p "$WORK/archives"
REPORT=$WORK/report.md
say() { echo "$*" | tee -a "$REPORT"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2-$1:.2f}')"; }

for img in "${IMGS[@]}"; do
  tar -C "$CORPUS/images/$img" -cf "$WORK/archives/$img.tar" oci-layout index.json blobs
done
LAYERS=$(for img in "${IMGS[@]}"; do
  python3 - "$CORPUS/images/$img" <<'PY'
import json, sys, os
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
def blob(dg): return json.load(open(os.path.join(d, "blobs", *dg.split(":"))))
m = blob(idx["manifests"][0]["digest"])
if "manifests" in m:
    m = blob(m["manifests"][0]["digest"])
for l in m["layers"]: print(l["digest"], l["size"])
PY
done | sort -u)
NLAYERS=$(echo "$LAYERS" | wc -l)
LBYTES=$(echo "$LAYERS" | awk '{s += $2} END {print s}')

CPID= SPID=
stop_all() {
  [ -n "$CPID" ] && { kill -TERM "$CPID" 2>/dev/null; wait "$CPID" 2>/dev/null || true; }
  [ -n "$SPID" ] && { kill -TERM "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null || true; }
  CPID= SPID=
  awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}
trap stop_all EXIT

# start VERSION MODE DIR: strata (unless local) and a containerd configured for MODE
start() {
  local ver=$1 mode=$2 d=$3 bin=/opt/strata-ci/containerd-$1/bin extra="" disabled=""
  mkdir -p "$d"
  if [ "$mode" != local ]; then
    local diff=()
    [ "$mode" = strata-differ ] && diff=(--containerd-diff-socket "$d/d.sock")
    "$STRATA" serve --data-dir "$d/strata" --socket "$d/s.sock" --containerd-socket "$d/c.sock" \
      "${diff[@]}" ${SERVE_ARGS:-} >"$d/strata.log" 2>&1 &
    SPID=$!
    for _ in $(seq 200); do [ -S "$d/c.sock" ] && break; sleep 0.05; done
    disabled=', "io.containerd.content.v1.content"'
    extra="[proxy_plugins.strata]
  type = \"content\"
  address = \"$d/c.sock\""
    if [ "$mode" = strata-differ ]; then
      extra="$extra
[proxy_plugins.strata-diff]
  type = \"diff\"
  address = \"$d/d.sock\""
    fi
  fi
  local differ=walking
  [ "$mode" = strata-differ ] && differ=strata-diff
  if [ "$ver" = 2 ]; then
    extra="$extra
[plugins.\"io.containerd.transfer.v1.local\"]
  [[plugins.\"io.containerd.transfer.v1.local\".unpack_config]]
    platform = \"linux/amd64\"
    snapshotter = \"overlayfs\"
    differ = \"$differ\""
  else
    extra="$extra
[plugins.\"io.containerd.service.v1.diff-service\"]
  default = [\"$differ\"$([ "$differ" = walking ] || echo ', "walking"')]"
  fi
  cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"$disabled]
[grpc]
  address = "$d/ctd.sock"
[ttrpc]
  address = "$d/ctd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
$extra
TOML
  PATH=$bin:$PATH "$bin/containerd" --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
  CPID=$!
  for _ in $(seq 200); do [ -S "$d/ctd.sock" ] && return 0; sleep 0.05; done
  echo "containerd $ver ($mode) did not start: $(tail -3 "$d/containerd.log")" >&2; exit 1
}

# import VERSION DIR [--no-unpack]: every image; prints the seconds taken
import_all() {
  local ver=$1 d=$2 t0; shift 2
  local plat=(); [ "$ver" = 2 ] && plat=(--platform linux/amd64)
  # Each run writes about a GB of files: the timed part starts with nothing
  # dirty and ends with its own files on disk (sync), so one run's writeback
  # does not land in the next one's time.
  sync
  t0=$(now)
  for img in "${IMGS[@]}"; do
    timeout 900 /opt/strata-ci/containerd-$ver/bin/ctr -a "$d/ctd.sock" -n bench images import \
      "${plat[@]}" --snapshotter overlayfs --base-name "bench.local/$img" "$@" \
      "$WORK/archives/$img.tar" >/dev/null
  done
  sync
  secs "$t0" "$(now)"
}

converted() { # wait for strata's background conversions
  while [ "$(STRATA_SOCKET=$1/s.sock "$STRATA" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_conversions"])')" != 0 ]; do
    sleep 0.5
  done
}

applied() { grep -c 'applied a layer' "$1/strata.log" 2>/dev/null || true; }

declare -A FULL ONLY FULL_APPLIED ONLY_APPLIED
best() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:] if x))" "$@"; }
# Rounds interleave the setups (local, proxy, differ, local, ...) and each
# figure is the best of its rounds: the disk's state (writeback of the last
# run, free space) moves single runs by tens of percent.
for round in $(seq "${REPEAT:-2}"); do
  for ver in "${VERS[@]}"; do
    for mode in "${MODES[@]}"; do
      d=$WORK/$ver-$mode
      start "$ver" "$mode" "$d/full"
      t=$(import_all "$ver" "$d/full")
      FULL[$ver.$mode]=$(best "$t" "${FULL[$ver.$mode]:-}")
      [ "$mode" = strata-differ ] && FULL_APPLIED[$ver]=$(applied "$d/full")
      stop_all; [ -n "${KEEP:-}" ] || rm -rf "$d/full"
      start "$ver" "$mode" "$d/only"
      import_all "$ver" "$d/only" --no-unpack >/dev/null
      [ "$mode" = local ] || converted "$d/only"
      t=$(import_all "$ver" "$d/only")
      ONLY[$ver.$mode]=$(best "$t" "${ONLY[$ver.$mode]:-}")
      [ "$mode" = strata-differ ] && ONLY_APPLIED[$ver]=$(applied "$d/only")
      stop_all; [ -n "${KEEP:-}" ] || rm -rf "$d/only"
    done
  done
done

say "# Unpack through containerd: local store, strata as content proxy, strata as content proxy and differ ($(date -u +%Y-%m-%dT%H:%MZ))"
say ""
say "${#IMGS[@]} images (${IMGS[*]}), $NLAYERS distinct gzip layers, $LBYTES compressed bytes; overlayfs snapshotter; seconds, best of ${REPEAT:-2} interleaved rounds, each ending with a sync"
say ""
say "| containerd | figure | local | strata-proxy | strata-differ | proxy/local | differ/local |"
say "|---|---|---:|---:|---:|---:|---:|"
ratio() { if [ -n "$1" ] && [ -n "$2" ]; then python3 -c "print(f'{$1/$2:.2f}')"; else echo "–"; fi; }
for ver in "${VERS[@]}"; do
  v=$(/opt/strata-ci/containerd-$ver/bin/containerd --version | awk '{print $3}')
  for f in FULL ONLY; do
    declare -n T=$f
    name=$([ $f = FULL ] && echo "import+unpack" || echo "unpack only")
    l=${T[$ver.local]:-} p=${T[$ver.strata-proxy]:-} d=${T[$ver.strata-differ]:-}
    say "| $v | $name | ${l:-–} | ${p:-–} | ${d:-–} | $(ratio "$p" "$l") | $(ratio "$d" "$l") |"
  done
  say ""
  say "containerd $v: layers applied by strata's differ: ${FULL_APPLIED[$ver]:-–} in import+unpack, ${ONLY_APPLIED[$ver]:-–} in unpack only"
done
