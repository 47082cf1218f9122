#!/usr/bin/env bash
# benches/containerd.sh CORPUS_DIR [WORK_DIR]
#
# containerd with its own local content store ("local") against containerd using
# strata as its proxy content store ("strata"), in one run on the same images:
# every OCI image of the corpus imported with `ctr images import`, bytes on disk
# (containerd's content dir against strata's data dir), import time, and the
# time of `ctr content get` of the largest layer. Needs root and containerd.
# strata keeps the layers containerd writes as received and converts them in
# the background (`serve --convert-after`): the run also records how long
# after the import the conversions were done, and measures bytes (after a
# `strata gc` of the copies kept as received) and reads once they are.
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

# CPU seconds a process has used (user + system).
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }

# timed_get NAME KEY DIGEST: best of REPEAT `ctr content get`, checked; records
# the wall time and the CPU containerd (CPID), strata (SPID, if any) and ctr
# spent in the best run.
timed_get() {
  local name=$1 key=$2 dg=$3 best=999999
  for _ in $(seq "$REPEAT"); do
    local a b c0 c1 s0=0 s1=0
    c0=$(cpu_s "$CPID"); [ -n "${SPID:-}" ] && s0=$(cpu_s "$SPID")
    a=$(now)
    /usr/bin/time -f "%U %S" -o "$WORK/ctr-time" ctr -a "$SOCK" -n bench content get "$dg" | sha256sum | grep -q "${dg#sha256:}" || { echo "read of $dg differs" >&2; exit 1; }
    b=$(now)
    c1=$(cpu_s "$CPID"); [ -n "${SPID:-}" ] && s1=$(cpu_s "$SPID")
    if python3 -c "import sys; sys.exit(0 if $b-$a < $best else 1)"; then
      best=$(python3 -c "print($b-$a)")
      CPU[$name.$key]=$(python3 -c "u,s=open('$WORK/ctr-time').read().split(); print(f'containerd {$c1-$c0:.2f}, strata {$s1-$s0:.2f}, ctr {float(u)+float(s):.2f}')")
    fi
  done
  READ[$name.$key]=$best
}

run() { # run NAME DIR: import everything, measure DIR, time reads of the biggest layer
  local name=$1 t0 t1 c0 s0=0 s1=0
  c0=$(cpu_s "$CPID"); [ -n "${SPID:-}" ] && s0=$(cpu_s "$SPID")
  t0=$(now)
  for img in "${IMAGES[@]}"; do
    ctr -a "$SOCK" -n bench images import --no-unpack --base-name "bench.local/$img" "$WORK/archives/$img.tar" >/dev/null
  done
  t1=$(now)
  IMPORT[$name]=$(secs "$t0" "$t1")
  [ -n "${SPID:-}" ] && s1=$(cpu_s "$SPID")
  IMPORT_CPU[$name]="containerd $(python3 -c "print(f'{$(cpu_s "$CPID")-$c0:.1f}')"), strata $(python3 -c "print(f'{$s1-$s0:.1f}')")"
  if [ "$name" = strata ]; then
    BYTES[strata.received]=$(du -sb "$2" | cut -f1)
    while [ "$(STRATA_SOCKET=$WORK/strata/s.sock "$STRATA" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_conversions"])')" != 0 ]; do
      sleep 0.5
    done
    CONVERTED=$(secs "$t1" "$(now)")
    CONVERT_CPU=$(python3 -c "print(f'{$(cpu_s "$SPID")-$s1:.1f}')")
    STRATA_SOCKET=$WORK/strata/s.sock "$STRATA" gc >/dev/null
  fi
  timed_get "$name" layer "$BIG_D"
  BYTES[$name]=$(du -sb "$2" | cut -f1)
  # The proxy's own cost: a blob of random bytes, which strata keeps as it
  # is (nothing to decode or rebuild), read the same way.
  ctr -a "$SOCK" -n bench content ingest --expected-digest "$RND_D" bench-random <"$WORK/random" >/dev/null
  timed_get "$name" random "$RND_D"
}
declare -A IMPORT READ BYTES CPU IMPORT_CPU
head -c "$BIG_N" /dev/urandom >"$WORK/random"
RND_D=sha256:$(sha256sum "$WORK/random" | cut -d' ' -f1)

start_containerd local "" ""
run local "$WORK/local/root/io.containerd.content.v1.content"
kill -TERM "$CPID"; wait "$CPID" || true

mkdir -p "$WORK/strata"
"$STRATA" serve --data-dir "$WORK/strata/data" --socket "$WORK/strata/s.sock" \
  --containerd-socket "$WORK/strata/c.sock" >"$WORK/strata/strata.log" 2>&1 &
SPID=$!
for _ in $(seq 200); do [ -S "$WORK/strata/c.sock" ] && break; sleep 0.05; done
start_containerd proxy ', "io.containerd.content.v1.content"' "[proxy_plugins]
  [proxy_plugins.strata]
    type = \"content\"
    address = \"$WORK/strata/c.sock\""
run strata "$WORK/strata/data"
SHWM=$(awk '/VmHWM/ {print $2}' "/proc/$SPID/status")
kill -TERM "$CPID"; wait "$CPID" || true
STRATA_SOCKET=$WORK/strata/s.sock "$STRATA" stats --json >"$WORK/strata-stats.json"
kill -TERM "$SPID"; wait "$SPID" || true

say "# containerd: local content store against strata as proxy ($(date -u +%Y-%m-%dT%H:%MZ))"
say ""
say "${#IMAGES[@]} OCI images (gzip layers, as the corpus's umoci wrote them); read: \`ctr content get\` of the largest layer ($BIG_N bytes), best of $REPEAT"
say ""
say "| store | bytes on disk | import s | read s | read MB/s | CPU s in the read |"
say "|---|---:|---:|---:|---:|---|"
for n in local strata; do
  say "| $n | ${BYTES[$n]} | ${IMPORT[$n]} | $(python3 -c "print(f'{${READ[$n.layer]}:.2f}')") | $(python3 -c "print(f'{$BIG_N/1e6/${READ[$n.layer]}:.0f}')") | ${CPU[$n.layer]} |"
done
say ""
say "strata: bytes on disk right after the import (layers as received) ${BYTES[strata.received]}; conversions done ${CONVERTED} s after the import ended, at nice 19, with ${CONVERT_CPU} s of strata's CPU (bytes, and the read, are measured after them and a \`strata gc\`)"
say ""
say "CPU s in the import: local: ${IMPORT_CPU[local]}; strata: ${IMPORT_CPU[strata]}"
say ""
say "ratios strata/local: bytes $(python3 -c "print(f'{${BYTES[strata]}/${BYTES[local]}:.3f}')"), import time $(python3 -c "print(f'{${IMPORT[strata]}/${IMPORT[local]}:.2f}')"), read time $(python3 -c "print(f'{${READ[strata.layer]}/${READ[local.layer]}:.2f}')"); strata daemon peak RSS $((SHWM / 1024)) MiB"
say ""
say "The proxy's own cost, on $BIG_N random bytes (\`ctr content ingest\`, kept as they are):"
say ""
say "| store | read s | CPU s in the read |"
say "|---|---:|---|"
for n in local strata; do
  say "| $n | $(python3 -c "print(f'{${READ[$n.random]}:.2f}')") | ${CPU[$n.random]} |"
done
say ""
say "read time strata/local on random bytes: $(python3 -c "print(f'{${READ[strata.random]}/${READ[local.random]}:.2f}')")"
say ""
say "strata stats: \`$(tr -d '\n ' <"$WORK/strata-stats.json")\`"

# The unpack figures (containerd 1.7 and 2.x, strata with and without its
# differ), in the same run.
say ""
bash "$ROOT/benches/unpack.sh" "$CORPUS" "$WORK/unpack" >/dev/null
cat "$WORK/unpack/report.md" >>"$REPORT"
cat "$WORK/unpack/report.md"
