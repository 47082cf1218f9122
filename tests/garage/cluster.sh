#!/usr/bin/env bash
# A three-node Garage 2.5.0 cluster on 127.0.0.1 for integration tests and
# benchmarks (tests/common/garage.rs drives it).
#
#   cluster.sh start DIR [BASE_PORT]   configure DIR, start the nodes, apply the
#                                     layout, create bucket + key; returns once
#                                     every node serves S3; prints what `env` does
#   cluster.sh env DIR                 shell lines: STRATA_S3_ENDPOINTS,
#                                     AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#                                     AWS_REGION, STRATA_S3_BUCKET
#   cluster.sh kill-node DIR N         SIGKILL node N (1..3), wait until it is gone
#   cluster.sh start-node DIR N        start node N again on its own data
#   cluster.sh stop DIR                stop every node of DIR and wait for them
#
# Ports: BASE_PORT (default 3900) + 10*N: RPC +0, S3 +1, admin +3. Node N keeps
# its config in DIR/nN.toml, its data in DIR/nN/ and its log in DIR/nN.log.
# Replication factor 3, "consistent" mode: reads and writes need 2 of 3 nodes.
# Several clusters may run at once as long as their DIRs and ports differ:
# everything is per DIR (pid files, a fresh rpc_secret), nothing is global.
# If GARAGE_CLUSTER_OWNER_PID is set at `start`, a watcher stops the cluster
# once that process is gone (a test killed before its Drop runs leaks nothing).
# The binary: $GARAGE, else /opt/strata-ci/garage-2.5.0/bin/garage (what
# .ci/garage installs), else `garage` on PATH. Garage is AGPL-3.0: it is only
# ever run as a separate program.
set -euo pipefail

usage() { echo "usage: $0 start DIR [BASE_PORT] | env DIR | kill-node DIR N | start-node DIR N | stop DIR" >&2; exit 2; }
die() { echo "garage cluster: $*" >&2; exit 1; }
[ $# -ge 2 ] || usage
cmd=$1
D=$(realpath -m -- "$2")
BUCKET=strata
KEY_NAME=strata-key
# Configs hold the rpc_secret and the key file the secret key.
umask 077
# Readable logs (tracing-subscriber honours NO_COLOR).
export NO_COLOR=1

find_garage() {
  if [ -n "${GARAGE:-}" ]; then
    command -v -- "$GARAGE" >/dev/null 2>&1 || die "GARAGE=$GARAGE is not an executable (unset it to use what \`bash .ci/garage\` installs)"
    realpath -- "$(command -v -- "$GARAGE")"
  elif [ -x /opt/strata-ci/garage-2.5.0/bin/garage ]; then
    echo /opt/strata-ci/garage-2.5.0/bin/garage
  elif command -v garage >/dev/null 2>&1; then
    command -v garage
  else
    die "no garage binary: run \`bash .ci/garage\` (builds Garage 2.5.0 into /opt/strata-ci), or set GARAGE"
  fi
}

port() { echo $(($(cat "$D/base") + 10 * $1 + $2)); } # port N OFFSET
g() { "$BIN" -c "$D/n$1.toml" "${@:2}"; }              # the CLI, talking to node N

# Is PID a live (not zombie) process running with this DIR's config for node N?
# Checking the command line guards against a recycled pid; a zombie's is empty.
node_pid() {
  local pid
  [ -f "$D/n$1.pid" ] || return 1
  pid=$(cat "$D/n$1.pid")
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$D/n$1.toml" || return 1
  echo "$pid"
}

# HTTP status code of GET http://127.0.0.1:PORT/PATH ("000" when nothing answers).
if command -v curl >/dev/null 2>&1; then
  http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1$2" || true; }
else
  http_code() {
    local line
    line=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3; head -n1 <&3' _ "$1" "$2" 2>/dev/null) || true
    line=${line#HTTP/* }
    [ -n "$line" ] && echo "${line%% *}" || echo 000
  }
fi

# Waits up to $1 seconds for the command "${@:2}" to succeed.
wait_for() {
  local deadline=$((SECONDS + $1))
  until "${@:2}"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}
s3_answers() { [ "$(http_code "$(port "$1" 1)" /)" != 000 ]; }
# The admin API's /health is 200 once this node sees a quorum for every partition,
# i.e. the layout is applied and enough peers are connected.
node_healthy() { [ "$(http_code "$(port "$1" 3)" /health)" = 200 ]; }
rpc_up() { g "$1" status >/dev/null 2>&1; }

write_config() { # write_config N SECRET [BOOTSTRAP_PEERS]
  local p
  p=$(port "$1" 0)
  cat >"$D/n$1.toml" <<EOF
metadata_dir = "$D/n$1/meta"
data_dir = "$D/n$1/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$p"
rpc_public_addr = "127.0.0.1:$p"
rpc_secret = "$2"
bootstrap_peers = [${3:-}]
# What strata and restic store is zstd already: Garage compressing it again
# spends the cores the clients share with it, for nothing.
compression_level = "none"

[s3_api]
api_bind_addr = "127.0.0.1:$((p + 1))"
s3_region = "garage"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((p + 3))"
EOF
}

# Starts node N in the background, detached from our stdio (so a caller reading
# our output does not wait for the node) and, started from a subshell, not a
# job of this shell (which would report its death).
launch() {
  node_pid "$1" >/dev/null && die "node $1 of $D is already running"
  ("$BIN" -c "$D/n$1.toml" server </dev/null >>"$D/n$1.log" 2>&1 &
    echo $! >"$D/n$1.pid")
}

# Waits up to $2 seconds for node N to answer $3 (a check taking N); fails at
# once if the node exits (a port taken, a bad config: see its log).
wait_node() {
  local deadline=$((SECONDS + $2))
  until "$3" "$1"; do
    node_pid "$1" >/dev/null ||
      die "node $1 exited (see $D/n$1.log): $(grep -m2 -E 'ERROR|panicked' "$D/n$1.log" || tail -n2 "$D/n$1.log")"
    [ $SECONDS -lt $deadline ] || die "node $1: no answer to $3 after $2 s (see $D/n$1.log)"
    sleep 0.1
  done
}

node_gone() { ! node_pid "$1" >/dev/null; }

# Signals node N and waits until it has exited. SIGKILL after 2 s: on SIGTERM
# Garage waits for clients' idle keep-alive connections to close, which can
# take 10 s, and a test cluster's data is thrown away anyway.
stop_node() { # stop_node N SIGNAL
  local pid
  pid=$(node_pid "$1") || return 0
  kill "-$2" "$pid" 2>/dev/null || true
  wait_for 2 node_gone "$1" || {
    kill -KILL "$pid" 2>/dev/null || true
    wait_for 10 node_gone "$1" || die "node $1 (pid $pid) does not exit"
  }
}

# Stops the three nodes in parallel and waits for all of them.
stop_all() {
  local n w rc=0 pids=()
  for n in 1 2 3; do
    stop_node "$n" TERM &
    pids+=($!)
  done
  for w in "${pids[@]}"; do wait "$w" || rc=1; done
  # The watcher, unless it is the one running this stop (bash may have exec'd
  # this script in the watcher's process, or run it as its child).
  if [ -f "$D/watch.pid" ]; then
    w=$(cat "$D/watch.pid")
    if [ "$w" != "$$" ] && [ "$w" != "$PPID" ] && tr '\0' ' ' <"/proc/$w/cmdline" 2>/dev/null | grep -qF -- "$D"; then
      kill "$w" 2>/dev/null || true
    fi
    rm -f "$D/watch.pid"
  fi
  return $rc
}

print_env() {
  [ -f "$D/key.env" ] || die "$D has no cluster (run start first)"
  local id secret
  id=$(sed -n 's/^AWS_ACCESS_KEY_ID=//p' "$D/key.env")
  secret=$(sed -n 's/^AWS_SECRET_ACCESS_KEY=//p' "$D/key.env")
  [ -n "$id" ] && [ -n "$secret" ] || die "no key in $D/key.env"
  echo "STRATA_S3_ENDPOINTS='http://127.0.0.1:$(port 1 1) http://127.0.0.1:$(port 2 1) http://127.0.0.1:$(port 3 1)'"
  echo "AWS_ACCESS_KEY_ID=$id"
  echo "AWS_SECRET_ACCESS_KEY=$secret"
  echo "AWS_REGION=garage"
  echo "STRATA_S3_BUCKET=$BUCKET"
}

case $cmd in
start)
  BIN=$(find_garage)
  BASE=${3:-3900}
  [[ $BASE =~ ^[0-9]+$ ]] && [ "$BASE" -ge 1 ] && [ "$BASE" -le 65500 ] || die "bad BASE_PORT $BASE"
  "$BIN" --version 2>/dev/null | grep -q '2\.5\.0' ||
    echo "garage cluster: warning: $BIN is not Garage 2.5.0 ($("$BIN" --version 2>&1 | head -1))" >&2
  mkdir -p "$D"
  for n in 1 2 3; do
    node_pid "$n" >/dev/null && die "$D already has running nodes (stop it first)"
  done
  # A fresh cluster every time: old data would carry an old layout and key.
  rm -rf "$D"/n[123] "$D"/n[123].* "$D/key.env" "$D/ids"
  echo "$BASE" >"$D/base"
  echo "$BIN" >"$D/bin"
  # A failed start leaves no node running (the logs stay for diagnosis).
  ok=0
  trap '[ $ok = 1 ] || stop_all' EXIT
  secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  for n in 1 2 3; do
    mkdir -p "$D/n$n"
    write_config "$n" "$secret"
    launch "$n"
  done
  for n in 1 2 3; do wait_node "$n" 30 rpc_up; done
  # Each node made its key on first start; connect them all to each other.
  for n in 1 2 3; do echo "$n $(g "$n" node id -q 2>/dev/null)" >>"$D/ids"; done
  for a in 1 2 3; do
    for b in 1 2 3; do
      [ "$a" = "$b" ] || g "$a" node connect "$(sed -n "s/^$b //p" "$D/ids")" >/dev/null
    done
  done
  # Garage persists its peer list only every 60 s, so a node restarted sooner
  # would not find the others: name them in the configs (read at next start).
  peers=$(awk '{printf "%s\"%s\"", (NR > 1 ? ", " : ""), $2}' "$D/ids")
  for n in 1 2 3; do write_config "$n" "$secret" "$peers"; done
  # One zone, equal capacities: every partition lives on all three nodes.
  mapfile -t node_ids < <(cut -d' ' -f2 "$D/ids" | cut -d@ -f1)
  g 1 layout assign -z dc1 -c 1G "${node_ids[@]}" >/dev/null
  g 1 layout apply --version 1 >/dev/null
  for n in 1 2 3; do wait_node "$n" 60 node_healthy; done
  g 1 bucket create "$BUCKET" >/dev/null
  g 1 key create "$KEY_NAME" >/dev/null
  g 1 bucket allow --read --write --owner "$BUCKET" --key "$KEY_NAME" >/dev/null
  g 1 key export-env "$KEY_NAME" >"$D/key.env"
  for n in 1 2 3; do wait_node "$n" 30 s3_answers; done
  if [ -n "${GARAGE_CLUSTER_OWNER_PID:-}" ]; then
    owner=$GARAGE_CLUSTER_OWNER_PID
    script=$(realpath -- "$0")
    (
      while [ -d "/proc/$owner" ] && ! grep -q '^State:.*Z' "/proc/$owner/status" 2>/dev/null; do sleep 1; done
      bash "$script" stop "$D"
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"$D/watch.pid"
  fi
  ok=1
  print_env
  ;;
env)
  print_env
  ;;
kill-node)
  n=${3:?node number 1..3}
  [[ $n =~ ^[123]$ ]] || usage
  stop_node "$n" KILL
  ;;
start-node)
  n=${3:?node number 1..3}
  [[ $n =~ ^[123]$ ]] || usage
  BIN=$(cat "$D/bin" 2>/dev/null) || BIN=$(find_garage)
  launch "$n"
  wait_node "$n" 30 s3_answers
  # bootstrap_peers makes it connect on its own, but the nodes that saw it die
  # only retry after 30 s: connect both ways now.
  others=0
  for m in 1 2 3; do
    if [ "$m" != "$n" ] && node_pid "$m" >/dev/null; then
      others=$((others + 1))
      g "$n" node connect "$(sed -n "s/^$m //p" "$D/ids")" >/dev/null 2>&1 || true
      wait_for 10 g "$m" node connect "$(sed -n "s/^$n //p" "$D/ids")" >/dev/null 2>&1 ||
        die "node $m cannot connect to node $n again (see $D/n$m.log, $D/n$n.log)"
    fi
  done
  # With another node up it has a quorum again: wait until it can serve.
  if [ $others -gt 0 ]; then
    wait_node "$n" 30 node_healthy
  fi
  ;;
stop)
  [ -d "$D" ] || exit 0
  stop_all
  ;;
*)
  usage
  ;;
esac
