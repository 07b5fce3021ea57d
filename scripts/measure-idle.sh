#!/usr/bin/env bash
# Memory per idle client connection: starts `herald standalone`, opens N
# idle connections with `herald bench idle`, and divides the server's RSS
# growth by N.  usage: scripts/measure-idle.sh [ws|sse|poll] [N]
set -euo pipefail
transport=${1:-ws}
count=${2:-10000}
target=${CARGO_TARGET_DIR:-$HOME/.cache/herald/target}
herald=${BIN:-$target/release/herald}
[ -x "$herald" ] || herald=$target/debug/herald
port=$((20000 + RANDOM % 20000))
export HERALD_JWT_SECRET=measure-idle-secret-0123456789-abcde HERALD_API_KEYS=measure-idle-key
export HERALD_CONNECTION_RATE=100000 HERALD_CONNECTION_RATE_PER_IP=100000 HERALD_MAX_CONNECTIONS_PER_IP=0 HERALD_MAX_CONNECTIONS_PER_USER=1000000 HERALD_LOG_FORMAT=json RUST_LOG=warn

"$herald" standalone --http 127.0.0.1:$port --grpc 127.0.0.1:0 &
server=$!
trap 'kill $server 2>/dev/null; kill $bench 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' /proc/$server/status; }
token=$("$herald" token --user bench --channels 'bench:*' --ttl 1h)

# One connection first, so one-time allocations (the channel, buffers that
# are created once) are not counted per connection.
"$herald" bench idle --url http://127.0.0.1:$port --transport "$transport" --connections 1 --token "$token" --hold-secs 3600 >/dev/null &
warm=$!
sleep 1
before=$(rss)
"$herald" bench idle --url http://127.0.0.1:$port --transport "$transport" --connections "$count" --token "$token" --hold-secs 3600 > /tmp/herald-idle.$$ &
bench=$!
for _ in $(seq 1 1200); do grep -q '^open' /tmp/herald-idle.$$ 2>/dev/null && break; sleep 0.1; done
sleep 2
after=$(rss)
open=$(awk '/^open/ {print $2}' /tmp/herald-idle.$$)
rm -f /tmp/herald-idle.$$
kill $warm 2>/dev/null || true
echo "transport=$transport connections=$open rss_before_kib=$before rss_after_kib=$after per_connection_bytes=$(( (after - before) * 1024 / open ))"
