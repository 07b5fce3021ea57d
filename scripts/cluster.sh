#!/usr/bin/env bash
# Herald's production shape on one machine: a 3-node NATS cluster with
# JetStream (streams at R3), 2 presence, 2 routing, notify, and 3 edges
# behind nginx (deploy/nginx.conf). For trying the distributed mode and for
# the cluster fault tests.
#
#   scripts/cluster.sh up              start everything (idempotent)
#   scripts/cluster.sh down            stop everything (SIGTERM, then SIGKILL)
#   scripts/cluster.sh status          one line per process; exports to eval
#   scripts/cluster.sh kill NAME       SIGKILL one process (nats-1, routing-2, edge-3, …)
#   scripts/cluster.sh stop NAME       SIGTERM one process and wait for it
#   scripts/cluster.sh start NAME      start one process again
#   scripts/cluster.sh wipe-nats       restart the whole NATS cluster with its data gone
#   scripts/cluster.sh scale N         run edges 1..N (1–9) behind nginx: new ones started,
#                                      nginx reloaded, the ones above N drained (SIGTERM)
#   scripts/cluster.sh freeze NAME     SIGSTOP a process (it keeps its sockets, answers nothing)
#   scripts/cluster.sh thaw NAME       SIGCONT it
#
# Settings (environment):
#   HERALD_BIN             the herald binary (default: built by cargo, debug)
#   HERALD_CLUSTER_DIR     state: configs, data, logs, pids (default ~/.cache/herald/cluster)
#   HERALD_CLUSTER_BASE    port base (default 24000); see `status` for the ports
#   HERALD_CLUSTER_PREFIX  subject prefix (default cluster)
#   HERALD_CLUSTER_DATABASE_URL  notify's PostgreSQL (default postgres://postgres@127.0.0.1:5432/postgres)
#   HERALD_CLUSTER_SECRET / HERALD_CLUSTER_API_KEY  token secret and API key
#   HERALD_CLUSTER_SETTINGS  a file of more HERALD_*=value lines for every Herald process
#                          (e.g. limits raised for a benchmark)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${HERALD_CLUSTER_DIR:-${HERALD_CACHE_DIR:-$HOME/.cache/herald}/cluster}
base=${HERALD_CLUSTER_BASE:-24000}
prefix=${HERALD_CLUSTER_PREFIX:-cluster}
database_url=${HERALD_CLUSTER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
secret=${HERALD_CLUSTER_SECRET:-cluster-secret-0123456789abcdef-0123}
api_key=${HERALD_CLUSTER_API_KEY:-cluster-api-key}
settings=${HERALD_CLUSTER_SETTINGS:-}
mkdir -p "$dir"

say() { echo "cluster: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() { # seconds, what, command...
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$what: not within ${seconds}s"
      return 1
    fi
    sleep 0.2
  done
}

herald_bin() {
  if [ -n "${HERALD_BIN:-}" ]; then echo "$HERALD_BIN"; return; fi
  local target=${CARGO_TARGET_DIR:-$HOME/.cache/herald/target}
  # a no-op when the binary is up to date
  CARGO_TARGET_DIR=$target cargo build -q -p herald >&2
  echo "$target/debug/herald"
}

# ports
nats_port() { echo $((base + $1)); }           # 1..3
nats_route() { echo $((base + 10 + $1)); }
nats_monitor() { echo $((base + 20 + $1)); }
presence_grpc() { echo $((base + 30 + $1)); }  # 1..2
presence_http() { echo $((base + 40 + $1)); }
routing_http() { echo $((base + 50 + $1)); }   # 1..2
routing_grpc() { echo $((base + 60 + $1)); }
notify_http() { echo $((base + 71)); }
notify_grpc() { echo $((base + 72)); }
edge_http() { echo $((base + 80 + $1)); }      # 1..9
nginx_port() { echo $((base + 80)); }

seeds() { echo "nats://127.0.0.1:$(nats_port 1),nats://127.0.0.1:$(nats_port 2),nats://127.0.0.1:$(nats_port 3)"; }

# the edges nginx sends clients to (scale changes it)
edges() { cat "$dir/edges" 2>/dev/null || echo "1 2 3"; }

processes() {
  local edge_names="" n
  for n in 1 2 3 4 5 6 7 8 9; do
    if [[ " $(edges) " == *" $n "* ]] || [ -e "$dir/edge-$n.pid" ]; then edge_names+=" edge-$n"; fi
  done
  echo "nats-1 nats-2 nats-3 presence-1 presence-2 routing-1 routing-2 notify$edge_names nginx"
}

pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# The port a process answers on, to wait for it.
port_of() {
  case $1 in
    nats-*) nats_port "${1#nats-}" ;;
    presence-*) presence_grpc "${1#presence-}" ;;
    routing-*) routing_http "${1#routing-}" ;;
    notify) notify_http ;;
    edge-*) edge_http "${1#edge-}" ;;
    nginx) nginx_port ;;
  esac
}

nats_config() { # n
  local n=$1 routes=()
  for m in 1 2 3; do
    [ "$m" = "$n" ] || routes+=("nats-route://127.0.0.1:$(nats_route "$m")")
  done
  cat >"$dir/nats-$n.conf" <<EOF
server_name: n$n
listen: 127.0.0.1:$(nats_port "$n")
http: 127.0.0.1:$(nats_monitor "$n")
jetstream { store_dir: "$dir/nats-$n-data" }
cluster {
  name: herald
  listen: 127.0.0.1:$(nats_route "$n")
  routes: [ $(IFS=,; echo "${routes[*]}") ]
}
EOF
}

nginx_config() {
  mkdir -p "$dir/nginx"
  # deploy/nginx.conf with this machine's edges, port and writable paths
  local upstream="" n
  for n in $(edges); do upstream+=" $(edge_http "$n")"; done
  awk -v dir="$dir" -v port="$(nginx_port)" -v upstream="$upstream" '
    $1 == "worker_processes" { print "worker_processes 1;"; print "pid " dir "/nginx/nginx.pid;"; next }
    $1 == "error_log" { print "error_log " dir "/nginx.log warn;"; next }
    $1 == "worker_connections" { print "    worker_connections 4096;"; next }
    $1 == "server" && $2 == "edge:8080;" {
      n = split(upstream, ports, " ")
      for (i = 1; i <= n; i++) print "        server 127.0.0.1:" ports[i] " max_fails=1 fail_timeout=2s;"
      next
    }
    $1 == "listen" { print "        listen 127.0.0.1:" port ";"; next }
    $1 == "access_log" {
      print
      split("client_body proxy fastcgi uwsgi scgi", temp, " ")
      for (t in temp) print "    " temp[t] "_temp_path " dir "/nginx/" temp[t] ";"
      next
    }
    { print }
  ' deploy/nginx.conf >"$dir/nginx.conf"
}

herald_env() { # name
  cat <<EOF
HERALD_NATS_URL=$(seeds)
HERALD_SUBJECT_PREFIX=$prefix
HERALD_JWT_SECRET=$secret
HERALD_API_KEYS=$api_key
HERALD_HISTORY_REPLICAS=3
HERALD_QUEUE_REPLICAS=3
HERALD_PRESENCE_URL=http://127.0.0.1:$(presence_grpc 1)
HERALD_NOTIFY_URL=http://127.0.0.1:$(notify_grpc)
HERALD_DATABASE_URL=$database_url
HERALD_TRUSTED_PROXIES=127.0.0.1/32
HERALD_NODE_ID=$1
HERALD_LOG_FORMAT=json
EOF
  if [ -n "$settings" ]; then cat "$settings"; fi
}

start_one() { # name
  local name=$1 bin
  if alive "$name"; then return 0; fi
  case $name in
    nats-*)
      local n=${name#nats-}
      nats_config "$n"
      mkdir -p "$dir/nats-$n-data"
      nohup nats-server -c "$dir/nats-$n.conf" >>"$dir/$name.log" 2>&1 &
      ;;
    nginx)
      command -v nginx >/dev/null 2>&1 || command -v /usr/sbin/nginx >/dev/null 2>&1 || {
        say "installing nginx-light"
        local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get install -y -qq nginx-light >/dev/null
      }
      nginx_config
      nohup "$(command -v nginx || echo /usr/sbin/nginx)" -c "$dir/nginx.conf" -p "$dir/nginx" -g 'daemon off;' >>"$dir/nginx.log" 2>&1 &
      ;;
    *)
      bin=$(herald_bin)
      local args
      case $name in
        presence-*) args=(presence --http "127.0.0.1:$(presence_http "${name#presence-}")" --grpc "127.0.0.1:$(presence_grpc "${name#presence-}")") ;;
        routing-*) args=(routing --http "127.0.0.1:$(routing_http "${name#routing-}")" --grpc "127.0.0.1:$(routing_grpc "${name#routing-}")") ;;
        notify) args=(notify --http "127.0.0.1:$(notify_http)" --grpc "127.0.0.1:$(notify_grpc)") ;;
        edge-*) args=(edge --http "127.0.0.1:$(edge_http "${name#edge-}")") ;;
        *) say "no process $name"; return 1 ;;
      esac
      (
        # only the cluster's settings: Herald refuses HERALD_* it does not know
        for v in $(compgen -e | grep '^HERALD_' || true); do unset "$v"; done
        set -a
        # shellcheck disable=SC1090
        . <(herald_env "$name")
        set +a
        exec nohup "$bin" "${args[@]}" >>"$dir/$name.log" 2>&1
      ) &
      ;;
  esac
  echo $! >"$dir/$name.pid"
  # a service asks for its streams for up to a minute while JetStream recovers
  wait_until 120 "$name listening on $(port_of "$name")" port_open "$(port_of "$name")"
}

jetstream_ready() {
  # every node current, and a meta leader elected
  for n in 1 2 3; do
    curl -sf "http://127.0.0.1:$(nats_monitor "$n")/healthz" >/dev/null || return 1
  done
  curl -sf "http://127.0.0.1:$(nats_monitor 1)/jsz" | grep -q '"leader"'
}

stop_one() { # name signal
  local name=$1 signal=${2:-TERM} pid
  pid=$(pid_of "$name")
  [ -n "$pid" ] || return 0
  kill "-$signal" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.1
  done
  rm -f "$dir/$name.pid"
}

status() {
  for name in $(processes); do
    if alive "$name"; then state=up; else state=down; fi
    echo "# $name $state pid=$(pid_of "$name") port=$(port_of "$name")"
  done
  cat <<EOF
HERALD_CLUSTER_URL=http://127.0.0.1:$(nginx_port)
HERALD_CLUSTER_WS=ws://127.0.0.1:$(nginx_port)/ws
HERALD_CLUSTER_API=http://127.0.0.1:$(routing_http 1)
HERALD_CLUSTER_API_2=http://127.0.0.1:$(routing_http 2)
HERALD_CLUSTER_NATS=$(seeds)
HERALD_CLUSTER_PREFIX=$prefix
HERALD_CLUSTER_SECRET=$secret
HERALD_CLUSTER_API_KEY=$api_key
EOF
}

case ${1:-} in
  up)
    command -v nats-server >/dev/null 2>&1 || scripts/services.sh
    for n in 1 2 3; do start_one "nats-$n"; done
    wait_until 60 "JetStream cluster" jetstream_ready
    for name in presence-1 presence-2 routing-1 routing-2 notify; do start_one "$name"; done
    for n in $(edges); do start_one "edge-$n"; done
    start_one nginx
    say "up: $(nginx_port) (nginx → 3 edges), server API $(routing_http 1)"
    status
    ;;
  down)
    for name in $(processes | tr ' ' '\n' | tac); do
      stop_one "$name" TERM
    done
    rm -f "$dir/edges"
    say "down"
    ;;
  status) status ;;
  kill) stop_one "${2:?name}" KILL ;;
  stop) stop_one "${2:?name}" TERM ;;
  start)
    start_one "${2:?name}"
    case $2 in nats-*) wait_until 60 "JetStream cluster" jetstream_ready ;; esac
    ;;
  wipe-nats)
    for n in 1 2 3; do stop_one "nats-$n" KILL; done
    for n in 1 2 3; do rm -rf "$dir/nats-$n-data"; done
    for n in 1 2 3; do start_one "nats-$n"; done
    wait_until 60 "JetStream cluster" jetstream_ready
    say "NATS restarted with no data"
    ;;
  scale)
    count=${2:?how many edges}
    [[ $count =~ ^[1-9]$ ]] || { say "scale: 1 to 9 edges"; exit 2; }
    for ((n = 1; n <= count; n++)); do start_one "edge-$n"; done
    seq -s ' ' 1 "$count" >"$dir/edges"
    # nginx sends new clients to the edges that stay, then the others drain
    nginx_config
    if alive nginx; then kill -HUP "$(pid_of nginx)"; fi
    draining=()
    for ((n = count + 1; n <= 9; n++)); do
      if alive "edge-$n"; then kill -TERM "$(pid_of "edge-$n")"; draining+=("edge-$n"); fi
    done
    for name in "${draining[@]}"; do stop_one "$name" TERM; done
    say "edges: $(edges)"
    ;;
  freeze)
    pid=$(pid_of "${2:?name}")
    kill -STOP "$pid"
    # every thread stopped, not just signalled
    all_stopped() { ! grep -qv '^[0-9]* ([^)]*) T' /proc/"$pid"/task/*/stat; }
    wait_until 30 "$2 stopped" all_stopped
    ;;
  thaw) kill -CONT "$(pid_of "${2:?name}")" ;;
  *)
    sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
