# Shared by the benchmark scripts (sourced, not run): the strata binary, a
# daemon on a data directory, clocks and the report.
# Expects ROOT (the repository) and REPORT (the report file) to be set.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/strata-target}
if [ -z "${STRATA:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet)
  STRATA=$CARGO_TARGET_DIR/release/strata
fi

now() { date +%s.%N; }
mbps() { python3 -c "print(f'{$1/1e6/($3-$2):.0f}')"; }
secs() { python3 -c "print(f'{$2-$1:.2f}')"; }
say() { echo "$*" | tee -a "$REPORT"; }

# corpus_layers CORPUS_DIR: sets LAYERS (the corpus's distinct layer tars,
# the first LIMIT of them when LIMIT is set) and TOTAL (their bytes).
corpus_layers() {
  mapfile -t LAYERS < <(awk -F'\t' 'NR>1 && !seen[$4]++ {print $4}' "$1/corpus.tsv" | sed "s|^|$1/|")
  if [ -n "${LIMIT:-}" ]; then LAYERS=("${LAYERS[@]:0:$LIMIT}"); fi
  TOTAL=0; for f in "${LAYERS[@]}"; do TOTAL=$((TOTAL + $(stat -c %s "$f"))); done
}

# strata_start DATA_DIR [serve args...]: starts a daemon, sets PID and STRATA_SOCKET.
strata_start() {
  local dir=$1; shift
  "$STRATA" serve --data-dir "$dir" --socket "$dir/strata.sock" "$@" >"$dir.log" 2>&1 &
  PID=$!
  export STRATA_SOCKET=$dir/strata.sock
  for _ in $(seq 200); do [ -S "$STRATA_SOCKET" ] && return 0; sleep 0.05; done
  echo "daemon did not start; see $dir.log" >&2; exit 1
}
strata_stop() { kill -TERM "$PID"; wait "$PID" || true; }

# garage_start BASE_PORT: a three-node Garage cluster in $WORK/garage
# (tests/garage/cluster.sh), stopped on any way out with the daemon in PID;
# sets G, GARAGE_BIN, EP (an S3 endpoint) and the AWS_* credentials.
garage_start() {
  G=$WORK/garage
  CLUSTER=$ROOT/tests/garage/cluster.sh
  trap 'bash "$CLUSTER" stop "$G" >/dev/null 2>&1 || true; [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true' EXIT
  eval "$(bash "$CLUSTER" start "$G" "$1")"
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
  EP=${STRATA_S3_ENDPOINTS%% *}
  GARAGE_BIN=${GARAGE:-/opt/strata-ci/garage-2.5.0/bin/garage}
}
