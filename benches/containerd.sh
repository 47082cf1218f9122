#!/usr/bin/env bash
# benches/containerd.sh CORPUS_DIR [WORK_DIR]
#
# containerd with its own local content store ("local") against containerd using
# strata as its proxy content store ("strata"), in one run on the same images:
# every OCI image of the corpus imported with `ctr images import`, bytes on disk
# (containerd's content dir against strata's data dir), import time, and the
# time of `ctr content get` of the largest layer. Needs root and containerd.
# Environment: STRATA (binary; default: cargo build --release), REPEAT (3).
set -euo pipefail

CORPUS=$(realpath "${1:?usage: benches/containerd.sh CORPUS_DIR [WORK_DIR]}")
WORK=$(realpath -m "${2:-/var/tmp/strata-bench-containerd}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
if [ -z "${STRATA:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  STRATA=$CARGO_TARGET_DIR/release/strata
fi
REPEAT=${REPEAT:-3}
rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
say() { echo "$*" | tee -a "$REPORT"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2-$1:.2f}')"; }

# OCI archives of every image, made once (outside the timed part).
mapfile -t IMAGES < <(ls "$CORPUS/images")
mkdir -p "$WORK/archives"
for img in "${IMAGES[@]}"; do
  tar -C "$CORPUS/images/$img" -cf "$WORK/archives/$img.tar" oci-layout index.json blobs
done
BIG=$(awk -F'\t' 'NR>1 {print $8, $9}' "$CORPUS/corpus.tsv" | sort -n | tail -1)
BIG_N=${BIG%% *}; BIG_D=${BIG##* }

# start_containerd NAME EXTRA_TOML: sets SOCK and CPID
start_containerd() {
  local d=$WORK/$1
  mkdir -p "$d"
  cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"$2]
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
$3
TOML
  containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
  CPID=$!
  SOCK=$d/c.sock
  for _ in $(seq 200); do [ -S "$SOCK" ] && return 0; sleep 0.05; done
  echo "containerd $1 did not start" >&2; exit 1
}

run() { # run NAME: import everything, then time reads of the biggest layer
  local name=$1 t0 t1 best=999999
  t0=$(now)
  for img in "${IMAGES[@]}"; do
    ctr -a "$SOCK" -n bench images import --no-unpack --base-name "bench.local/$img" "$WORK/archives/$img.tar" >/dev/null
  done
  t1=$(now)
  IMPORT[$name]=$(secs "$t0" "$t1")
  for _ in $(seq "$REPEAT"); do
    local a b; a=$(now)
    ctr -a "$SOCK" -n bench content get "$BIG_D" | sha256sum | grep -q "${BIG_D#sha256:}" || { echo "read of $BIG_D differs" >&2; exit 1; }
    b=$(now)
    best=$(python3 -c "print(min($best, $b-$a))")
  done
  READ[$name]=$best
}
declare -A IMPORT READ BYTES

start_containerd local "" ""
run local
kill -TERM "$CPID"; wait "$CPID" || true
BYTES[local]=$(du -sb "$WORK/local/root/io.containerd.content.v1.content" | cut -f1)

mkdir -p "$WORK/strata"
"$STRATA" serve --data-dir "$WORK/strata/data" --socket "$WORK/strata/s.sock" \
  --containerd-socket "$WORK/strata/c.sock" >"$WORK/strata/strata.log" 2>&1 &
SPID=$!
for _ in $(seq 200); do [ -S "$WORK/strata/c.sock" ] && break; sleep 0.05; done
start_containerd proxy ', "io.containerd.content.v1.content"' "[proxy_plugins]
  [proxy_plugins.strata]
    type = \"content\"
    address = \"$WORK/strata/c.sock\""
run strata
SHWM=$(awk '/VmHWM/ {print $2}' "/proc/$SPID/status")
kill -TERM "$CPID"; wait "$CPID" || true
STRATA_SOCKET=$WORK/strata/s.sock "$STRATA" stats --json >"$WORK/strata-stats.json"
kill -TERM "$SPID"; wait "$SPID" || true
BYTES[strata]=$(du -sb "$WORK/strata/data" | cut -f1)

say "# containerd: local content store against strata as proxy ($(date -u +%Y-%m-%dT%H:%MZ))"
say ""
say "${#IMAGES[@]} OCI images (gzip layers, as the corpus's umoci wrote them); read: \`ctr content get\` of the largest layer ($BIG_N bytes), best of $REPEAT"
say ""
say "| store | bytes on disk | import s | read s | read MB/s |"
say "|---|---:|---:|---:|---:|"
for n in local strata; do
  say "| $n | ${BYTES[$n]} | ${IMPORT[$n]} | $(python3 -c "print(f'{${READ[$n]}:.2f}')") | $(python3 -c "print(f'{$BIG_N/1e6/${READ[$n]}:.0f}')") |"
done
say ""
say "ratios strata/local: bytes $(python3 -c "print(f'{${BYTES[strata]}/${BYTES[local]}:.3f}')"), import time $(python3 -c "print(f'{${IMPORT[strata]}/${IMPORT[local]}:.2f}')"), read time $(python3 -c "print(f'{${READ[strata]}/${READ[local]}:.2f}')"); strata daemon peak RSS $((SHWM / 1024)) MiB"
say ""
say "strata stats: \`$(tr -d '\n ' <"$WORK/strata-stats.json")\`"
