#!/usr/bin/env bash
# XSI-Events across instances on one PostgreSQL, beside one instance on the same database, on
# loopback against xsi-sim with generated users and two XSPs (docs/cluster.md).
#
# For 1 and then `instances` xsigate processes (each its own data directory, one server secret,
# one database): `users` users log in, spread over the instances in turn, and each gets a
# user-level channel set (Do Not Disturb). Prints the sets each instance holds (its leases) and
# the sets the simulator holds; then events-load toggles DND of the first `event_users` users
# at `rate` changes per second for `seconds`, and prints the events per second that reached the
# instances' buses (each instance's fixture tap), the change->bus latency and, through
# firebase-sync and the simulator's Realtime Database stand-in, the change->database latency.
# PostgreSQL is Debian's, made by initdb and run by pg_ctl in a temporary directory (as
# `nobody` when run as root); `scripts/install-deps test` installs it.
#
# Usage: bench/cluster.sh [users=3000] [rate=1000] [seconds=20] [event_users=1500] [instances=3]
set -euo pipefail

users=${1:-3000}
rate=${2:-1000}
seconds=${3:-20}
event_users=${4:-1500}
instances=${5:-3}
source "$(dirname "$0")/common.sh"

"$root/scripts/install-deps" build
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL's server is missing: scripts/install-deps test" >&2; exit 1; }
cargo build --release --locked -p xsigate -p xsi-sim -p xsigate-idp-broadsoft -p xsigate-xsi-events \
  -p xsigate-firebase-sync -p xsigate-fixture-host-services -p xsigate-bench --manifest-path "$root/Cargo.toml" >&2
ulimit -n "$(ulimit -Hn)"

xsp1=127.0.0.1:19483 xsp2=127.0.0.1:19484 control=127.0.0.1:19485 firebase=127.0.0.1:19486
pg_port=19487
ports_free 19483 19484 19485 19486 $(seq 19490 $((19490 + 2 * instances)))

# PostgreSQL refuses to run as root: its directory belongs to `nobody` then.
pg_dir="$work/pg"
mkdir -p "$pg_dir"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chmod 711 "$work"
  chown nobody "$pg_dir"
  as_pg=(runuser -u nobody --)
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U xsigate --auth=trust -E UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c max_connections=200" start >/dev/null
stop_pg() { "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true; }
trap 'stop_pg; cleanup' EXIT
"$pg_bin/createdb" -h 127.0.0.1 -p $pg_port -U xsigate xsigate

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/secret"
echo -n admin-password > "$work/master"
cat > "$work/sim.toml" <<CONF
[[admins]]
user_id = "admin@sim.xsigate.test"
password = "admin-password"
scope = { level = "service_provider", service_provider = "generated" }
CONF
"$root/target/release/xsi-sim" --seed "$work/sim.toml" --generate-users "$users" \
  --xsp "$xsp1" --xsp "$xsp2" --control "$control" --firebase "$firebase" \
  --firebase-service-account "$root/tests/fixtures/firebase/service-account.json" 2>/dev/null & pids+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://$control/channels" && break; sleep 0.1; done

metric() { curl -fs "$1" | awk -v s="$2" 'index($0, s" ") == 1 { print $2; found = 1 } END { if (!found) print 0 }'; }

# Starts instance $1 (0-based) of run $2 on the shared database.
start_instance() {
  local n=$1 run=$2 port=$((19490 + 2 * $1)) metrics_port=$((19491 + 2 * $1))
  cat > "$work/xsigate-$run-$n.toml" <<CONF
$(server_toml "$work/data-$run-$n" "$port" "$metrics_port" "secret_file = \"$work/secret\"")
[server.store]
url = "postgres://xsigate@127.0.0.1:$pg_port/xsigate"
tls = "off"
[[plugins]]
name = "broadsoft"
path = "$root/target/release/libxsigate_idp_broadsoft.so"
[[plugins]]
name = "events"
path = "$root/target/release/libxsigate_xsi_events.so"
[plugins.config.providers.bench]
packages = ["Do Not Disturb"]
[[plugins]]
name = "tap"
path = "$root/target/release/libxsigate_fixture_host_services.so"
[plugins.config]
tap = ["xsi.event"]
[[plugins]]
name = "firebase"
path = "$root/target/release/libxsigate_firebase_sync.so"
[plugins.config.providers.bench]
database_url = "http://$firebase"
token_url = "http://$firebase/token"
service_account_file = "$root/tests/fixtures/firebase/service-account.json"
[providers.bench]
domains = ["sim.xsigate.test", "tap.bench"]
xsp = ["http://$xsp1", "http://$xsp2"]
master = { user = "admin@sim.xsigate.test", password_file = "$work/master" }
plugins = ["broadsoft", "events", "tap", "firebase"]
CONF
  "$root/target/release/xsigate" run -c "$work/xsigate-$run-$n.toml" 2>"$work/xsigate-$run-$n.log" &
  running+=($!) pids+=($!)
  wait_ready "$!" "$metrics_port" "$work/xsigate-$run-$n.log"
}

# One run with $1 instances: logins spread over them, the sets held, then the events.
measure_run() {
  local count=$1 run=$2
  running=()
  for n in $(seq 0 $((count - 1))); do start_instance "$n" "$run"; done
  # Each instance logs in its slice of the users at the same time, as a load balancer would
  # spread them.
  local slice=$(((users + count - 1) / count)) gateways=() logins=()
  for n in $(seq 0 $((count - 1))); do
    local first=$((n * slice)) take=$slice
    [ $((first + take)) -gt "$users" ] && take=$((users - first))
    "$root/target/release/events-load" login --gateway "http://127.0.0.1:$((19490 + 2 * n))" \
      --first "$first" --users "$take" --concurrency $((64 / count)) | sed "s/^/instance $n: /" &
    logins+=($!)
    gateways+=(--gateway "http://127.0.0.1:$((19490 + 2 * n))")
  done
  for pid in "${logins[@]}"; do wait "$pid"; done
  local held=0
  for _ in $(seq 1 600); do
    held=0
    for n in $(seq 0 $((count - 1))); do
      held=$((held + $(metric "http://127.0.0.1:$((19491 + 2 * n))/metrics" 'xsigate_leases_held{plugin="events"}' | cut -d. -f1)))
    done
    [ "$held" -ge "$users" ] && break
    sleep 0.2
  done
  local per=""
  for n in $(seq 0 $((count - 1))); do
    per+=" $(metric "http://127.0.0.1:$((19491 + 2 * n))/metrics" 'xsigate_leases_held{plugin="events"}' | cut -d. -f1)"
  done
  local sim_sets
  sim_sets=$(curl -fs "http://$control/channels" | grep -o '"channel_id"' | wc -l)
  echo "sets held per instance:$per (leases $held); the simulator holds $sim_sets channels for $users users"
  "$root/target/release/events-load" drive --control "http://$control" "${gateways[@]}" \
    --tap-user tap@tap.bench --users "$event_users" --rate "$rate" --seconds "$seconds" \
    --firebase "http://$firebase"
  local rss=""
  for pid in "${running[@]}"; do rss+=" $(rss_kib "$pid")"; done
  echo "xsigate rss KiB per instance:$rss"
  # A graceful stop hands the sets over; the next run's instances resume them from the store.
  for pid in "${running[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${running[@]}"; do wait "$pid" 2>/dev/null || true; done
  # The sets' records stay for the next run, which logs everyone in again: start it clean.
  "$pg_bin/psql" -q -h 127.0.0.1 -p $pg_port -U xsigate xsigate \
    -c "DELETE FROM plugin_kv; DELETE FROM leases; DELETE FROM sessions; DELETE FROM instances;"
  curl -fs -X DELETE -o /dev/null "http://$control/channels" 2>/dev/null || true
}

echo "# 1 instance on PostgreSQL: $users user-level sets; $rate DND changes/s over $event_users users for ${seconds}s"
measure_run 1 one
sleep 2
echo
echo "# $instances instances on one PostgreSQL: the same"
measure_run "$instances" many
