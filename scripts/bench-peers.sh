#!/usr/bin/env bash
# Herald against what a user would pick instead, in one run on this
# machine: Herald standalone, Herald distributed (scripts/cluster.sh: the
# edge measured), a Node `ws` server (bench/peers/ws-server.mjs) and the
# NATS server itself (fan-out only). Systems are interleaved within each
# round and the rounds repeated; the medians go to BENCHMARKS.md with the
# ratios, the machine and its load average.
#
#   scripts/bench-peers.sh [--quick] [--rounds N] [--out FILE]
#
# Figures, per system:
#   idle memory   server RSS growth ÷ connections held by `herald bench idle`
#                 (WebSocket at WS_CONNECTIONS, SSE and long polling at
#                 SSE_CONNECTIONS), each in a fresh server process
#   saturation    `herald bench latency` (or `bench nats`) with SUBSCRIBERS
#                 subscribers, 64 B publications at a rate beyond what the
#                 machine can deliver: deliveries/s achieved, and server
#                 CPU (user + system, all threads) ÷ deliveries
#   half load     the same at half the slowest WebSocket server's saturation
#                 rate: publish → deliver p50 / p99
# The clients run on the same cores as the servers: saturation figures are
# the machine's, shared; memory and CPU per delivery are the stable ones.
#
# Environment: BIN (herald binary; default: release build), WS_CONNECTIONS,
# SSE_CONNECTIONS, SUBSCRIBERS, SECONDS_PER_RUN, PORT_BASE (the first of
# 100 free ports to use; default: a random block).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false rounds=3 out=BENCHMARKS.md
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=true ;;
    --rounds) rounds=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--quick] [--rounds N] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
if $quick; then
  # a check that every part runs, not a measurement
  : "${WS_CONNECTIONS:=200}" "${SSE_CONNECTIONS:=200}" "${SUBSCRIBERS:=20}" "${SECONDS_PER_RUN:=1}"
  saturating_rate=200 rounds=1
else
  : "${WS_CONNECTIONS:=15000}" "${SSE_CONNECTIONS:=10000}" "${SUBSCRIBERS:=1000}" "${SECONDS_PER_RUN:=5}"
  saturating_rate=5000
fi

target=${CARGO_TARGET_DIR:-$HOME/.cache/herald/target}
if [ -z "${BIN:-}" ]; then
  cargo build -q --release -p herald
  BIN=$target/release/herald
fi
node_modules=$(scripts/js-env.sh)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  HERALD_CLUSTER_DIR=$work/cluster HERALD_CLUSTER_BASE=$cluster_base scripts/cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "bench-peers: $*" >&2; }

secret=bench-peers-secret-0123456789-abcdef
api_key=bench-peers-key
export HERALD_JWT_SECRET=$secret HERALD_API_KEYS=$api_key
# one block of 100 ports: the cluster's (cluster.sh uses +1…+89), then the
# single processes' (+90…+99)
cluster_base=${PORT_BASE:-$((10000 + RANDOM % 220 * 100))}
next_port=$((cluster_base + 90))
take_port() { # sets `p`
  p=$next_port
  next_port=$(( next_port < cluster_base + 99 ? next_port + 1 : cluster_base + 90 ))
}
token=$("$BIN" token --user bench --channels 'bench:*' --ttl 2h)
# limits raised: every client is one user on one address
limits="HERALD_CONNECTION_RATE=100000 HERALD_CONNECTION_RATE_PER_IP=100000 HERALD_MAX_CONNECTIONS_PER_IP=0 HERALD_MAX_CONNECTIONS_PER_USER=1000000 HERALD_LOG_FORMAT=json"
printf '%s\n' $limits > "$work/limits.env"

wait_http() { # url
  for _ in $(seq 1 300); do curl -sf "$1/healthz" >/dev/null && return 0; sleep 0.1; done
  say "$1 did not answer"; return 1
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

# prints "url api pid" of a system started fresh (called without a
# subshell, so that `pids` keeps what cleanup must stop)
start_system() { # name
  case $1 in
    herald)
      local p; take_port
      env $limits RUST_LOG=warn "$BIN" standalone --http "127.0.0.1:$p" --grpc 127.0.0.1:0 >"$work/herald.log" 2>&1 &
      pids+=($!); wait_http "http://127.0.0.1:$p"
      echo "http://127.0.0.1:$p http://127.0.0.1:$p $!" ;;
    node)
      local p; take_port
      NODE_PATH=$node_modules node bench/peers/ws-server.mjs "$p" >"$work/node.log" 2>&1 &
      pids+=($!); wait_http "http://127.0.0.1:$p"
      echo "http://127.0.0.1:$p http://127.0.0.1:$p $!" ;;
    distributed)
      HERALD_BIN=$BIN HERALD_CLUSTER_DIR=$work/cluster HERALD_CLUSTER_BASE=$cluster_base \
        HERALD_CLUSTER_SECRET=$secret HERALD_CLUSTER_API_KEY=$api_key \
        HERALD_CLUSTER_SETTINGS=$work/limits.env scripts/cluster.sh up >"$work/cluster.log" 2>&1
      echo "http://127.0.0.1:$((cluster_base + 81)) http://127.0.0.1:$((cluster_base + 51)) $(cat "$work/cluster/edge-1.pid")" ;;
  esac
}
stop_system() { # name pid
  if [ "$1" = distributed ]; then
    HERALD_CLUSTER_DIR=$work/cluster HERALD_CLUSTER_BASE=$cluster_base scripts/cluster.sh down >/dev/null 2>&1 || true
    rm -rf "$work/cluster"
  else
    kill "$2" 2>/dev/null || true
    wait "$2" 2>/dev/null || true
  fi
}

results=$work/results # lines: system figure value
touch "$results"
record() { echo "$1 $2 $3" >>"$results"; say "$1 $2 = $3"; }

idle() { # system url pid transport connections
  "$BIN" bench idle --url "$2" --transport "$4" --connections 1 --token "$token" --hold-secs 3600 >/dev/null 2>&1 &
  local warm=$!
  sleep 1
  local before; before=$(rss_kib "$3")
  "$BIN" bench idle --url "$2" --transport "$4" --connections "$5" --token "$token" --hold-secs 3600 >"$work/idle.out" 2>"$work/idle.err" &
  local bench=$!
  for _ in $(seq 1 1800); do grep -q '^open' "$work/idle.out" && break; sleep 0.1; done
  sleep 2
  local after open; after=$(rss_kib "$3"); open=$(awk '/^open/ {print $2}' "$work/idle.out")
  kill "$bench" "$warm" 2>/dev/null || true
  wait "$bench" "$warm" 2>/dev/null || true
  if [ -n "$open" ] && [ "$open" -gt 0 ]; then
    record "$1" "idle_${4}_bytes" $(( (after - before) * 1024 / open ))
  fi
}

fanout() { # system url api pid rate label
  local cpu0 out; cpu0=$(cpu_ticks "$4")
  if [ "$1" = nats ]; then
    out=$("$BIN" bench nats --nats "$2" --subscribers "$SUBSCRIBERS" --rate "$5" --duration "$SECONDS_PER_RUN" --payload 64)
  else
    out=$("$BIN" bench latency --url "$2" --api "$3" --api-key "$api_key" --token "$token" \
      --subscribers "$SUBSCRIBERS" --rate "$5" --duration "$SECONDS_PER_RUN" --payload 64 --channel bench:fanout)
  fi
  local cpu1; cpu1=$(cpu_ticks "$4")
  echo "$out" >>"$work/fanout.log"
  local deliveries rate lost p50 p99
  deliveries=$(echo "$out" | sed -n 's/.* deliveries=\([0-9]*\).*/\1/p')
  lost=$(echo "$out" | sed -n 's/.* lost=\([0-9]*\).*/\1/p')
  rate=$(echo "$out" | sed -n 's/.* delivery_rate=\([0-9]*\).*/\1/p')
  p50=$(echo "$out" | sed -n 's/^delivery_us p50=\([0-9]*\).*/\1/p')
  p99=$(echo "$out" | sed -n 's/^delivery_us .* p99=\([0-9]*\).*/\1/p')
  if [ "$6" = saturation ]; then
    record "$1" deliveries_per_s "$rate"
    [ "${deliveries:-0}" -gt 0 ] && record "$1" cpu_ns_per_delivery \
      $(( (cpu1 - cpu0) * 1000000000 / ticks_per_second / deliveries ))
  else
    record "$1" half_p50_us "$p50"
    record "$1" half_p99_us "$p99"
  fi
  record "$1" "${6}_lost" "${lost:-0}"
}

start_nats() {
  local p; take_port
  nats-server -a 127.0.0.1 -p "$p" >"$work/nats.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
  echo "nats://127.0.0.1:$p $!"
}

systems="herald node distributed"
for round in $(seq 1 "$rounds"); do
  say "round $round of $rounds"
  for system in $systems; do
    # each figure from a fresh process: memory freed by the connections
    # of one transport stays in the process and would serve the next
    for transport in ws sse poll; do
      [ "$system:$transport" = node:poll ] && continue
      [ "$transport" = ws ] && count=$WS_CONNECTIONS || count=$SSE_CONNECTIONS
      start_system "$system" >"$work/system"
      read -r url api pid <"$work/system"
      idle "$system" "$url" "$pid" "$transport" "$count"
      stop_system "$system" "$pid"
    done
    start_system "$system" >"$work/system"
    read -r url api pid <"$work/system"
    fanout "$system" "$url" "$api" "$pid" "$saturating_rate" saturation
    stop_system "$system" "$pid"
  done
  start_nats >"$work/system"
  read -r nats_url nats_pid <"$work/system"
  fanout nats "$nats_url" - "$nats_pid" "$saturating_rate" saturation
  kill "$nats_pid"
  # half load: half the slowest WebSocket server's saturation this round
  slowest=$(awk '$2 == "deliveries_per_s" && $1 != "nats" {print $3}' "$results" | sort -n | head -1)
  half_rate=$(( slowest / SUBSCRIBERS / 2 ))
  [ "$half_rate" -ge 1 ] || half_rate=1
  record all half_rate "$half_rate"
  for system in $systems; do
    start_system "$system" >"$work/system"
    read -r url api pid <"$work/system"
    fanout "$system" "$url" "$api" "$pid" "$half_rate" half
    stop_system "$system" "$pid"
  done
done

median() { # system figure
  awk -v s="$1" -v f="$2" '$1 == s && $2 == f {print $3}' "$results" | sort -n |
    awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "–"}'
}
ratio() { # a b
  awk -v a="$1" -v b="$2" 'BEGIN {if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "–"}'
}
row() { # label figure
  local h n d s
  h=$(median herald "$2"); n=$(median node "$2"); d=$(median distributed "$2"); s=$(median nats "$2")
  echo "| $1 | $h | $d | $n | $s | $(ratio "$h" "$n") | $(ratio "$d" "$n") |"
}

{
  echo "# Benchmarks"
  echo
  echo "Written by \`scripts/bench-peers.sh$($quick && echo " --quick")\` on $(date -u +%Y-%m-%d) — medians of $rounds"
  echo "round(s), systems interleaved within each round. Machine: $(nproc) cores,"
  echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Herald: \`$("$BIN" --version)\`; Node $(node --version) with \`ws\`; $(nats-server --version)."
  $quick && echo && echo "**A quick run (tiny sizes): it shows the script works, not what the systems cost.**"
  echo
  echo "The clients (\`herald bench\`) share the cores with the servers. Idle memory"
  echo "is server RSS growth ÷ connections; CPU per delivery is the server's"
  echo "CPU time (user + system) ÷ deliveries at saturation (distributed: the edge"
  echo "process alone); half load runs every WebSocket server at half the"
  echo "slowest one's saturation rate ($(median all half_rate) publications/s to $SUBSCRIBERS subscribers)."
  echo
  echo "| figure | Herald standalone | Herald distributed (edge) | Node \`ws\` | NATS server | standalone ÷ Node | distributed ÷ Node |"
  echo "|---|---|---|---|---|---|---|"
  row "idle WebSocket, bytes / connection at $WS_CONNECTIONS" idle_ws_bytes
  row "idle SSE, bytes / connection at $SSE_CONNECTIONS" idle_sse_bytes
  row "held long poll, bytes / session at $SSE_CONNECTIONS" idle_poll_bytes
  row "deliveries / s at saturation ($SUBSCRIBERS subscribers, 64 B)" deliveries_per_s
  row "server CPU per delivery at saturation, ns" cpu_ns_per_delivery
  row "lost at saturation" saturation_lost
  row "publish → deliver p50 at half load, µs" half_p50_us
  row "publish → deliver p99 at half load, µs" half_p99_us
  row "lost at half load" half_lost
  echo
  echo "Every figure of every round:"
  echo
  echo '```'
  cat "$results"
  echo '```'
} >"$out"
say "wrote $out"
