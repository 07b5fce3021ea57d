#!/usr/bin/env bash
# Makes sure the services Herald's tests need are installed and running:
# nats-server (with JetStream) and PostgreSQL. Idempotent: installs from
# Debian's packages only what is missing, starts only what is not running,
# then waits until both answer.
#
#   HERALD_TEST_NATS_URL      default nats://127.0.0.1:4222
#   HERALD_TEST_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/postgres
set -euo pipefail

nats_url=${HERALD_TEST_NATS_URL:-nats://127.0.0.1:4222}
db_url=${HERALD_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
nats_hostport=${nats_url#nats://}
nats_host=${nats_hostport%:*}
nats_port=${nats_hostport##*:}
pg_hostport=${db_url#*@}
pg_hostport=${pg_hostport%%/*}
pg_host=${pg_hostport%:*}
pg_port=${pg_hostport##*:}

state_dir=${HERALD_SERVICES_DIR:-${HERALD_CACHE_DIR:-$HOME/.cache/herald}/services}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

say() { echo "services: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 150); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  say "$name did not come up within 30 s"
  return 1
}

missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- NATS with JetStream
if port_open "$nats_host" "$nats_port"; then
  say "nats-server answers on $nats_host:$nats_port"
else
  say "starting nats-server on $nats_host:$nats_port (JetStream in $state_dir/nats)"
  mkdir -p "$state_dir/nats"
  nohup nats-server -a "$nats_host" -p "$nats_port" -js -sd "$state_dir/nats" \
    -l "$state_dir/nats-server.log" >/dev/null 2>&1 &
  wait_for nats-server port_open "$nats_host" "$nats_port"
fi

# --- PostgreSQL
pg_ready() { pg_isready -q -h "$pg_host" -p "$pg_port" >/dev/null 2>&1; }
if pg_ready; then
  say "PostgreSQL answers on $pg_host:$pg_port"
else
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    say "creating PostgreSQL $version cluster 'main'"
    $sudo pg_createcluster "$version" main -p "$pg_port" >/dev/null
  fi
  cluster_version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$cluster_version/main/pg_hba.conf
  # A test machine: trust local TCP connections (user postgres, no password).
  if ! grep -q '^# herald-test' "$hba"; then
    say "allowing trusted connections from 127.0.0.1 (test machine)"
    tmp=$(mktemp)
    { echo "# herald-test: trust local TCP for the test suite"
      echo "host all all 127.0.0.1/32 trust"
      echo "host all all ::1/128 trust"
      cat "$hba"; } > "$tmp"
    $sudo cp "$tmp" "$hba"
    rm -f "$tmp"
  fi
  say "starting PostgreSQL $cluster_version"
  $sudo pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start || true
  wait_for PostgreSQL pg_ready
fi

# The README's walk listens on the documented gRPC ports 50051-50053, which
# lie in the kernel's ephemeral range: an outgoing connection of another test
# could hold one as its local port and make the bind fail. Keep them out of
# the ephemeral range where the machine lets us (best effort; a container
# may not).
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
if [ -w "$reserved" ] && ! grep -q "50051-50053" "$reserved"; then
  current=$(cat "$reserved")
  echo "${current:+$current,}50051-50053" > "$reserved" 2>/dev/null \
    && say "reserved ports 50051-50053 from ephemeral use" || true
fi

say "ready: NATS $nats_host:$nats_port, PostgreSQL $pg_host:$pg_port"
