#!/usr/bin/env bash
# benches/compact.sh [WORK_DIR]
#
# Compaction of small bucket objects (issue 17), on a three-node Garage
# cluster on this machine (tests/garage/cluster.sh): N small blobs (image
# configs and small layers, 1-60 KB, made here) pushed one by one through
# strata --store s3://, then `strata gc` until compaction and collection are
# done. Reports the bucket's objects and bytes before and after, what each
# collection did and took, and a cold read of every blob from an empty data
# directory before compaction and after it.
#
# Environment: STRATA (binary; default: cargo build --release), N (blobs,
# default 400), GRACE (--s3-gc-grace, default 20s).
set -euo pipefail

WORK=$(realpath -m "${1:-/var/tmp/strata-bench-compact}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
rm -rf "$WORK"; mkdir -p "$WORK/blobs"
REPORT=$WORK/report.md
# shellcheck source=benches/common.sh
. "$HERE/common.sh"
N=${N:-400}
GRACE=${GRACE:-20}

# Small blobs: half JSON configs, half small tars of text files.
python3 - "$WORK/blobs" "$N" <<'EOF'
import io, json, random, sys, tarfile
out, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(17)
words = [f"w{i}" for i in range(4000)]
for i in range(n):
    if i % 2 == 0:
        cfg = {"architecture": "amd64", "os": "linux", "created": f"2026-01-{1 + i % 28:02d}",
               "config": {"Env": [f"PATH=/usr/bin:/bin", f"N={i}"], "Cmd": ["/bin/app", str(i)]},
               "history": [{"created_by": " ".join(rnd.choices(words, k=30))} for _ in range(8)]}
        data = json.dumps(cfg).encode()
    else:
        b = io.BytesIO()
        with tarfile.open(fileobj=b, mode="w", format=tarfile.GNU_FORMAT) as t:
            for k in range(1 + i % 4):
                body = " ".join(rnd.choices(words, k=rnd.randint(200, 4000))).encode()
                ti = tarfile.TarInfo(f"etc/app{i}/f{k}.conf"); ti.size = len(body); ti.mtime = 1700000000 + i
                t.addfile(ti, io.BytesIO(body))
        data = b.getvalue()
    open(f"{out}/{i:05d}", "wb").write(data)
EOF
mapfile -t BLOBS < <(ls "$WORK/blobs" | sed "s|^|$WORK/blobs/|")
TOTAL=0; for f in "${BLOBS[@]}"; do TOTAL=$((TOTAL + $(stat -c %s "$f"))); done

garage_start "${GARAGE_BASE_PORT:-25400}"
S3ARGS=(--metrics-addr off --store s3://strata/compact --s3-endpoint "$EP" --s3-region garage
  --s3-timeout 1s --s3-gc-grace "${GRACE}s" --gc-interval 1h)

bucket() { "$STRATA" stats --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["bucket_objects"], s["bucket_bytes"])'; }
read_all() { # cold: a daemon on an empty data directory (its start, the
  # index rebuilt from the bucket, is timed too) reads every blob
  local d=$WORK/cold-$1 t0 t1 ok=0 i s0
  s0=$(now)
  strata_start "$d" "${S3ARGS[@]}"
  t0=$(now)
  for i in "${!BLOBS[@]}"; do
    got=$("$STRATA" cat "${DIGESTS[$i]}" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "${DIGESTS[$i]}" ] && ok=$((ok + 1))
  done
  t1=$(now)
  strata_stop
  [ "$ok" = "${#BLOBS[@]}" ] || { echo "only $ok of ${#BLOBS[@]} blobs read back exact" >&2; exit 1; }
  echo "$(secs "$s0" "$t0") $(secs "$t0" "$t1")"
}

say "# compaction benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "$N small blobs ($TOTAL bytes, $((TOTAL / N)) on average), pushed one by one; $(nproc) cores; $("$STRATA" --version); Garage 2.5.0, 3 nodes on 127.0.0.1; --s3-gc-grace ${GRACE}s, --s3-compact-after 32"
say ""
D=$WORK/a
strata_start "$D" "${S3ARGS[@]}"
t0=$(now); "$STRATA" push "${BLOBS[@]}" >"$WORK/push.txt"; t1=$(now)
mapfile -t DIGESTS < <(cut -d' ' -f1 "$WORK/push.txt")
say "pushes: $(secs "$t0" "$t1") s ($(python3 -c "print(f'{$N/($t1-$t0):.0f}')") pushes/s)"
read -r O0 B0 < <(bucket)
strata_stop
read -r START0 COLD0 < <(read_all before)
strata_start "$D" "${S3ARGS[@]}"
say ""
say "| step | seconds | pieces compacted → written | segments merged → written | marked | deleted | bucket objects | bucket bytes |"
say "|---|---:|---|---|---:|---:|---:|---:|"
say "| after the pushes | | | | | | $O0 | $B0 |"
for run in 1 2 3; do
  [ "$run" = 1 ] || sleep "$GRACE"
  t0=$(now); R=$("$STRATA" gc --json --no-densify); t1=$(now)
  F=$(echo "$R" | python3 -c 'import json,sys; r=json.load(sys.stdin); k=lambda n: str(r[n]); print(k("bucket_pieces_compacted")+" → "+k("bucket_pieces_written")+" | "+k("bucket_segments_compacted")+" → "+k("bucket_segments_written")+" | "+k("bucket_marked")+" | "+k("bucket_deleted"))')
  read -r O B < <(bucket)
  say "| strata gc $run | $(secs "$t0" "$t1") | $F | $O | $B |"
done
strata_stop
read -r START1 COLD1 < <(read_all after)
say ""
say "an empty data dir against the bucket: start (index rebuilt) ${START0} s before compaction, ${START1} s after; then a cold read of all $N blobs (one \`strata cat\` each) ${COLD0} s before, ${COLD1} s after"
say ""
say "objects per pushed blob: $(python3 -c "print(f'{$O0/$N:.2f}')") before, $(python3 -c "print(f'{$O/$N:.2f}')") after"
