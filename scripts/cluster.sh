#!/usr/bin/env bash
# A local cluster from cluster-configs/local-3 (or $MEMWAL_CLUSTER_CONFIGS) as background processes.
#
#   scripts/cluster.sh up              build if needed, make certificates on first run, start every
#                                      node and the controller, return once a primary has its
#                                      quorum of followers streaming (it then takes quorum writes);
#                                      prints `node NAME API_URL ROLE` per node and
#                                      `controller URL`
#   scripts/cluster.sh down            SIGTERM every node and the controller (SIGKILL after 20 s)
#   scripts/cluster.sh status          `node NAME API_URL ROLE` (or `down`) per node, and the
#                                      controller's line
#   scripts/cluster.sh demo            `up`, then a quorum write, a read on a follower, a kill -9 of
#                                      the primary and a write on the new one, and the old primary's
#                                      rejoin; leaves the cluster running (`down` stops it)
#   scripts/cluster.sh kill NODE       SIGKILL one node (or `controller`)
#   scripts/cluster.sh restart NODE    stop (if running) and start one node (or `controller`)
#
# Logs and pid files go to .memwal-cluster/ (or $MEMWAL_RUN_DIR); node data goes where each
# configuration's data_dir says (.memwal-cluster/nK for local-3), the controller's state where
# its controller.state_directory says. Run from anywhere: paths are taken from the repository
# root. A configuration folder without controller.yaml runs with static roles
# (initial_primary stays primary).
set -euo pipefail
cd "$(dirname "$0")/.."

configs="${MEMWAL_CLUSTER_CONFIGS:-cluster-configs/local-3}"
run_dir="${MEMWAL_RUN_DIR:-.memwal-cluster}"
binary="${MEMWAL_BINARY:-.build/release/memwal}"
mkdir -p "$run_dir"

nodes() { for file in "$configs"/*.yaml; do [ "$(basename "$file")" = controller.yaml ] || basename "$file" .yaml; done; }
has_controller() { [ -f "$configs/controller.yaml" ]; }
controller_url() { sed -n 's/.*controller: *{api: *"\([^"]*\)".*/\1/p' "$configs/controller.yaml" | sed -n 1p; }

# The API URL a configuration listens on (its `listen:` line).
api_url() { echo "http://$(sed -n 's/^listen: *//p' "$configs/$1.yaml" | tr -d '"')"; }

pid_of() {
  local file="$run_dir/$1.pid"
  [ -f "$file" ] || return 1
  local pid
  pid="$(cat "$file")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

role_of() {
  curl -sf --max-time 2 "$(api_url "$1")/v1/status" | sed -n 's/.*"role":"\([a-z]*\)".*/\1/p'
}

ensure_built() {
  if [ ! -x "$binary" ]; then
    echo "building $binary (swift build -c release)..." >&2
    swift build -c release >&2
  fi
}

ensure_certificates() {
  local certs
  certs="$(sed -n 's/^ *certificates: *//p' "$configs/$(nodes | sed -n 1p).yaml" | tr -d '"')"
  if [ ! -f "$certs/ca.pem" ]; then
    "$binary" certs init --out "$certs" --nodes "$(nodes | paste -sd, -)" --controller >&2
  fi
}

start_node() {
  local name="$1" command=serve
  if pid_of "$name" >/dev/null; then return 0; fi
  [ "$name" = controller ] && command=controller
  nohup "$binary" "$command" --config "$configs/$name.yaml" >>"$run_dir/$name.log" 2>&1 &
  echo $! >"$run_dir/$name.pid"
}

stop_node() {
  local name="$1" signal="${2:-TERM}" pid
  pid="$(pid_of "$name")" || { rm -f "$run_dir/$name.pid"; return 0; }
  kill "-$signal" "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$run_dir/$name.pid"
}

print_status() {
  local name role
  for name in $(nodes); do
    if pid_of "$name" >/dev/null && role="$(role_of "$name")" && [ -n "$role" ]; then
      echo "node $name $(api_url "$name") $role"
    else
      echo "node $name $(api_url "$name") down"
    fi
  done
  if has_controller; then
    if pid_of controller >/dev/null; then
      echo "controller $(controller_url)"
    else
      echo "controller $(controller_url) down"
    fi
  fi
}

all_processes() { nodes; if has_controller; then echo controller; fi; }

# Waits (at most 60 s) until some node is primary with at least its quorum (k) of followers
# streaming: from then on it acknowledges `quorum` writes.
wait_for_writes() {
  local deadline=$((SECONDS + 60)) name status quorum streaming
  while [ "$SECONDS" -lt "$deadline" ]; do
    for name in $(all_processes); do
      if [ -f "$run_dir/$name.pid" ] && ! pid_of "$name" >/dev/null; then
        echo "$name exited while the cluster was starting; the end of $run_dir/$name.log:" >&2
        tail -n 20 "$run_dir/$name.log" >&2 || true
        return 1
      fi
    done
    for name in $(nodes); do
      status="$(curl -sf --max-time 2 "$(api_url "$name")/v1/status" || true)"
      case "$status" in *'"role":"primary"'*) ;; *) continue ;; esac
      quorum="$(sed -n 's/^ *quorum: *//p' "$configs/$name.yaml")"
      streaming="$(grep -o '"state":"streaming"' <<<"$status" | wc -l || true)"
      if [ "$streaming" -ge "${quorum:-1}" ]; then return 0; fi
    done
    sleep 0.2
  done
  echo "no primary with its quorum of followers within 60 s; logs in $run_dir/" >&2
  return 1
}

# The primary's name, as the controller (or, without one, the nodes) report it.
primary_name() {
  local name
  if has_controller; then
    curl -sf --max-time 2 "$(controller_url)/v1/cluster" | sed -n 's/.*"primary":{[^}]*"name":"\([^"]*\)".*/\1/p'
    return
  fi
  for name in $(nodes); do
    [ "$(role_of "$name")" = primary ] && { echo "$name"; return; }
  done
}

show() { echo "\$ $*" >&2; "$@"; echo >&2; }

demo() {
  local primary follower url started new body
  primary="$(primary_name || true)"
  follower="$(nodes | grep -vx "$primary" | sed -n 1p)"
  url="$(api_url "$primary")"
  echo "== a write at quorum on the primary, $primary" >&2
  curl -s -XPOST "$url/v1/namespaces" -d '{"name":"demo","dimension":3,"metric":"cosine","durability":"quorum"}' >/dev/null || true
  body="$(show curl -s -XPOST "$url/v1/namespaces/demo/memories" \
    -d '{"memories":[{"id":"m1","vector":[1,0,0],"text":"written before the failover"}],"durability":"quorum"}')"
  echo "$body"
  local lsn
  lsn="$(sed -n 's/.*"lsn":\([0-9]*\).*/\1/p' <<<"$body")"
  echo "== the same memory read on the follower $follower (min_lsn=$lsn: waits until applied there)" >&2
  show curl -s "$(api_url "$follower")/v1/namespaces/demo/memories/m1?min_lsn=$lsn"
  if ! has_controller; then
    echo "(no controller in $configs: no failover to show)" >&2
    return 0
  fi
  echo "== kill -9 the primary $primary; the controller promotes a follower" >&2
  started="$(date +%s%N)"
  stop_node "$primary" KILL
  new=""
  for _ in $(seq 1 300); do
    new="$(primary_name || true)"
    if [ -n "$new" ] && [ "$new" != "$primary" ] && \
      curl -sf --max-time 2 -XPOST "$(api_url "$new")/v1/namespaces/demo/memories" \
        -d '{"memories":[{"id":"m2","vector":[0,1,0],"text":"written after the failover"}],"durability":"quorum"}' \
        >"$run_dir/demo-write.json"; then
      break
    fi
    sleep 0.05
  done
  echo "new primary: $new; first quorum write acknowledged $(( ($(date +%s%N) - started) / 1000000 )) ms after the kill:" >&2
  cat "$run_dir/demo-write.json"; echo
  echo "== restart $primary: it rejoins as a follower" >&2
  start_node "$primary"
  wait_for_writes
  for _ in $(seq 1 100); do
    [ "$(role_of "$primary")" = follower ] && break
    sleep 0.1
  done
}

case "${1:-}" in
  demo)
    "$0" up
    demo
    print_status
    ;;
  up)
    ensure_built
    ensure_certificates
    for name in $(all_processes); do start_node "$name"; done
    wait_for_writes
    print_status
    ;;
  down)
    if has_controller; then stop_node controller; fi
    for name in $(nodes); do stop_node "$name"; done
    ;;
  status)
    print_status
    ;;
  kill)
    [ -n "${2:-}" ] || { echo "usage: $0 kill NODE" >&2; exit 2; }
    stop_node "$2" KILL
    ;;
  restart)
    [ -n "${2:-}" ] || { echo "usage: $0 restart NODE" >&2; exit 2; }
    ensure_built
    stop_node "$2"
    start_node "$2"
    ;;
  *)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
