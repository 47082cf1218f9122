#!/usr/bin/env bash
# benches/load.sh [WORK_DIR]
#
# The load test: starts `strata serve` on a fresh data directory, runs
# benches/load.rs against it (CLIENTS concurrent clients, each on its own
# connection, pushing layer-like tars, reading blobs back whole and in ranges
# with every byte checked, and stat'ing them) for LOAD_SECONDS, RUNS times in a
# row on the same daemon, and samples the daemon's VmRSS every second. Prints a
# markdown report (latency percentiles, throughput, errors, RSS over each run)
# and writes it to WORK_DIR/report.md; the RSS samples are in WORK_DIR/rss.tsv.
#
# Environment: STRATA (binary; default: cargo build --release), CLIENTS (64),
# LOAD_SECONDS (60), RUNS (2), SETTLE (5: idle seconds between and after runs),
# KEEP=1 (keep the data directory and the daemon's log). Exits 1 if any run counted an error.
set -euo pipefail

WORK=$(realpath -m "${1:-/var/tmp/strata-load}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
CLIENTS=${CLIENTS:-64}
LOAD_SECONDS=${LOAD_SECONDS:-60}
RUNS=${RUNS:-2}
SETTLE=${SETTLE:-5}
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 1; }

rm -rf "$WORK"; mkdir -p "$WORK"
REPORT=$WORK/report.md
# shellcheck source=benches/common.sh
source "$HERE/common.sh"

# The load generator, copied out of the shared target directory so a build
# running meanwhile cannot replace it between runs.
LOAD_BIN=$(cd "$ROOT" && cargo bench --bench load --no-run --quiet --message-format=json |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "load" and m.get("executable"):
        print(m["executable"])')
cp "$LOAD_BIN" "$WORK/load"

COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(cd "$ROOT" && git status --porcelain -- src benches proto build.rs Cargo.toml Cargo.lock 2>/dev/null)" ] ||
  COMMIT="$COMMIT+dirty"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

D=$WORK/data
strata_start "$D" --metrics-addr off
( while kill -0 "$PID" 2>/dev/null; do
    r=$(rss_kib "$PID") || break
    [ -n "$r" ] && echo "$(now) $r"
    sleep 1
  done ) >"$WORK/rss.tsv" &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null; kill -TERM "$PID" 2>/dev/null' EXIT

say "# load test $(date -u +%Y-%m-%dT%H:%MZ)"
say ""
say "Command: \`CLIENTS=$CLIENTS LOAD_SECONDS=$LOAD_SECONDS RUNS=$RUNS benches/load.sh\`; commit $COMMIT;" \
  "$(nproc) cores, load average $(loadavg) before; $("$STRATA" --version);" \
  "daemon with default settings (\`--metrics-addr off\`), generator and daemon on the same machine over the unix socket"
say ""

sleep "$SETTLE"
MARKS=$WORK/marks.tsv; : >"$MARKS"
FAILED=0
for run in $(seq "$RUNS"); do
  t0=$(now)
  rc=0
  "$WORK/load" --bench --clients "$CLIENTS" --seconds "$LOAD_SECONDS" --socket "$STRATA_SOCKET" \
    >"$WORK/run$run.md" 2>"$WORK/run$run.log" || rc=$?
  t1=$(now)
  [ "$rc" = 0 ] || FAILED=1
  sleep "$SETTLE"
  echo "$run $t0 $t1 $(now)" >>"$MARKS"
  say "## Run $run of $RUNS (exit status $rc; load average $(loadavg) at its end)"
  say ""
  while IFS= read -r line; do say "$line"; done <"$WORK/run$run.md"
  say ""
done
HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status")
"$STRATA" stats --json >"$WORK/stats.json"
trap - EXIT
strata_stop
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true

say "## Daemon RSS (VmRSS sampled every second, MiB)"
say ""
python3 - "$WORK/rss.tsv" "$MARKS" "$LOAD_SECONDS" "$HWM" "$SETTLE" <<'EOF' | while IFS= read -r line; do say "$line"; done
import sys
samples = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
marks = [l.split() for l in open(sys.argv[2]) if l.strip()]
secs, hwm, settle = float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
mib = lambda k: f"{k / 1024:.0f}"
def at(t):  # the last sample taken at or before t
    before = [r for (s, r) in samples if s <= t]
    return before[-1] if before else samples[0][1]
points = list(range(0, int(secs), 10))[1:]
print("| run | at start | " + " | ".join(f"{p} s" for p in points)
      + " | at end | max during run | " + settle + " s after |")
print("|---|" + "---:|" * (len(points) + 4))
ends = []
for run, t0, t1, t2 in marks:
    t0, t1, t2 = float(t0), float(t1), float(t2)
    during = [r for (s, r) in samples if t0 <= s <= t1] or [at(t1)]
    ends.append(at(t1))
    print(f"| {run} | {mib(at(t0))} | " + " | ".join(mib(at(t0 + p)) for p in points)
          + f" | {mib(at(t1))} | {mib(max(during))} | {mib(at(t2))} |")
t10 = at(float(marks[0][1]) + 10)
print()
line = (f"daemon peak RSS (VmHWM) {mib(hwm)} MiB; at the end of run 1 {mib(ends[0])} MiB, "
        f"{(ends[0] - t10) / 1024:+.0f} MiB against 10 s into it")
if len(ends) > 1:
    line += f"; at the end of run {len(ends)} {mib(ends[-1])} MiB, {(ends[-1] - ends[0]) / 1024:+.0f} MiB against the end of run 1"
print(line)
EOF
say ""
say "strata stats after the runs: \`$(tr -d '\n ' <"$WORK/stats.json")\`"
# The daemon log (a line per push) is kept only when something failed.
[ -n "${KEEP:-}" ] || { rm -rf "$D" "$WORK/load"; [ "$FAILED" = 1 ] || rm -f "$D.log"; }
echo "report: $REPORT" >&2
exit "$FAILED"
