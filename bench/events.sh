#!/usr/bin/env bash
# XSI-Events at scale, on loopback, against xsi-sim with generated users and two XSPs.
#
# 1. Channels: `users` users log in through xsigate; xsi-events opens a user-level channel set
#    for each (Do Not Disturb subscribed, heartbeats every 15 s against the XSPs' 30 s
#    eventTimeout) and holds them for `hold` seconds. Prints the logins per second, the
#    channels the simulator holds at the end, heartbeats sent and failed, reconnects,
#    xsigate's resident memory per channel set and its CPU while holding.
# 2. Events: a provider-level (enterprise) channel set with the master credentials; events-load
#    toggles DND of `event_users` users at `rate` changes per second for `seconds` through the
#    simulator's control API. Prints the events per second that reached the bus (the fixture
#    tap), every one acknowledged, and the change->bus latency percentiles. firebase-sync
#    writes every change to the simulator's Realtime Database stand-in (OAuth2 service
#    account): prints the writes, locations per write and the change->database latency.
# 3. Busy lamp field: `watchers` more users (after the event users) each get a Busy Lamp Field
#    list of 20 event users and log in; the same changes drive the lamps. Prints the lamp
#    locations written per change and the change->lamp latency per (change, watcher).
#    BLF_WATCHERS=0 skips it.
#
# Usage: bench/events.sh [users=10000] [hold=60] [rate=2000] [seconds=30] [event_users=2000]
# (hold=0 runs the events part only.)
# XSIGATE_BENCH_HEAP=FILE runs part 1 only, its xsigate under heaptrack (a build on the system's
# malloc, which heaptrack sees, in target/heap-profile), prints the heap alive at the peak (the
# logins) and while the sets are held (xsigate is killed at the end of the hold, so what it never
# freed is what it held) by what allocated it, and leaves the recording in FILE.zst or .gz
# (heaptrack_gui, heaptrack_print; `--flamegraph-cost-type leaked` for the held heap).
set -euo pipefail

users=${1:-10000}
hold=${2:-60}
rate=${3:-2000}
seconds=${4:-30}
event_users=${5:-2000}
watchers=${BLF_WATCHERS:-1000}
# The simulator has the event users and, after them, the watchers.
sim_users=$users
[ "$users" -lt $((event_users + watchers)) ] && sim_users=$((event_users + watchers))
source "$(dirname "$0")/common.sh"

"$root/scripts/install-deps" build
cargo build --release --locked -p xsigate -p xsi-sim -p xsigate-idp-broadsoft -p xsigate-xsi-events \
  -p xsigate-firebase-sync -p xsigate-fixture-host-services -p xsigate-bench --manifest-path "$root/Cargo.toml" >&2
heap=${XSIGATE_BENCH_HEAP:-}
if [ -n "$heap" ]; then
  command -v heaptrack >/dev/null || { echo "XSIGATE_BENCH_HEAP needs heaptrack (Debian: apt-get install heaptrack)" >&2; exit 1; }
  cargo build --release --locked -p xsigate --features system-allocator \
    --target-dir "$root/target/heap-profile" --manifest-path "$root/Cargo.toml" >&2
fi
# Each channel is a socket on both sides, plus pooled command connections.
ulimit -n "$(ulimit -Hn)"

xsigate_port=19381 metrics_port=19382 xsp1=127.0.0.1:19383 xsp2=127.0.0.1:19384 control=127.0.0.1:19385
firebase=127.0.0.1:19386
ports_free $xsigate_port $metrics_port 19383 19384 19385 19386
metrics="http://127.0.0.1:$metrics_port/metrics"
metric() { curl -fs "$metrics" | awk -v s="$1" 'index($0, s" ") == 1 { print $2; found = 1 } END { if (!found) print 0 }'; }
hz=$(getconf CLK_TCK)

cat > "$work/sim.toml" <<CONF
[[admins]]
user_id = "admin@sim.xsigate.test"
password = "admin-password"
scope = { level = "service_provider", service_provider = "generated" }
CONF
echo -n admin-password > "$work/master"

# Starts the simulator (with its Firebase stand-in) and xsigate with the given xsi-events
# settings; a third argument `firebase` adds firebase-sync.
start() {
  "$root/target/release/xsi-sim" --seed "$work/sim.toml" --generate-users "$sim_users" \
    --xsp "$xsp1" --xsp "$xsp2" --control "$control" --firebase "$firebase" \
    --firebase-service-account "$root/tests/fixtures/firebase/service-account.json" 2>/dev/null & sim=$!; pids+=($sim)
  local plugins='"broadsoft", "events", "tap"' firebase_plugin=""
  if [ "${3:-}" = firebase ]; then
    plugins+=', "firebase"'
    firebase_plugin="[[plugins]]
name = \"firebase\"
path = \"$root/target/release/libxsigate_firebase_sync.so\"
[plugins.config.providers.bench]
database_url = \"http://$firebase\"
token_url = \"http://$firebase/token\"
service_account_file = \"$root/tests/fixtures/firebase/service-account.json\""
  fi
  for _ in $(seq 1 100); do curl -fs -o /dev/null "http://$control/channels" && break; sleep 0.1; done
  cat > "$work/xsigate.toml" <<CONF
$(server_toml "$work/data-$1" "$xsigate_port" "$metrics_port")
[[plugins]]
name = "broadsoft"
path = "$root/target/release/libxsigate_idp_broadsoft.so"
[[plugins]]
name = "events"
path = "$root/target/release/libxsigate_xsi_events.so"
[plugins.config.providers.bench]
$2
[[plugins]]
name = "tap"
path = "$root/target/release/libxsigate_fixture_host_services.so"
[plugins.config]
tap = ["xsi.event"]
$firebase_plugin
[providers.bench]
domains = ["sim.xsigate.test", "tap.bench"]
xsp = ["http://$xsp1", "http://$xsp2"]
master = { user = "admin@sim.xsigate.test", password_file = "$work/master" }
plugins = [$plugins]
CONF
  if [ -n "$heap" ]; then
    heaptrack -o "$heap" "$root/target/heap-profile/release/xsigate" run -c "$work/xsigate.toml" \
      >"$work/heaptrack.out" 2>"$work/xsigate.log" & recorder=$!; pids+=($recorder)
    # heaptrack runs xsigate as its child: that is the process to measure and to stop.
    xsigate=
    for _ in $(seq 1 100); do xsigate=$(pgrep -P "$recorder" -x xsigate) && break; sleep 0.1; done
    [ -n "$xsigate" ] || { cat "$work/heaptrack.out" "$work/xsigate.log" >&2; exit 1; }
    pids+=($xsigate)
  else
    "$root/target/release/xsigate" run -c "$work/xsigate.toml" 2>"$work/xsigate.log" & xsigate=$!; pids+=($xsigate)
  fi
  wait_ready "$xsigate" "$metrics_port" "$work/xsigate.log"
}

stop() {
  # Under heaptrack xsigate is killed where it stands, so that what it never freed is what it
  # held: a graceful stop would free the sets first.
  if [ -n "$heap" ]; then kill -KILL "$xsigate" 2>/dev/null || true; fi
  kill "$xsigate" "$sim" 2>/dev/null || true; wait "$xsigate" "$sim" 2>/dev/null || true
}

if [ "$hold" -gt 0 ]; then
echo "# 1. $users user-level channel sets held for ${hold}s (heartbeat 15 s, XSP eventTimeout 30 s)"
start channels 'packages = ["Do Not Disturb"]'
rss_idle=$(rss_kib "$xsigate")
"$root/target/release/events-load" login --gateway "http://127.0.0.1:$xsigate_port" --users "$users"
until [ "$(metric 'xsigate_plugin_events_channels{plugin="events",provider="bench",state="open"}')" = "$users" ]; do
  sleep 1
done
before=$(cpu_ticks "$xsigate") from=$(date +%s.%N)
sleep "$hold"
after=$(cpu_ticks "$xsigate") to=$(date +%s.%N)
rss_held=$(rss_kib "$xsigate")
sockets=$(find /proc/"$xsigate"/fd -lname 'socket:*' | wc -l)
held=$(curl -fs "http://$control/channels" | grep -o '"channel_id"' | wc -l)
echo "channels held by the simulator at the end: $held of $users; xsigate holds $sockets sockets"
echo "heartbeats ok $(metric 'xsigate_plugin_events_heartbeats_total{plugin="events",provider="bench",result="ok"}'), failed $(metric 'xsigate_plugin_events_heartbeats_total{plugin="events",provider="bench",result="failed"}')"
echo "reconnects: $(curl -fs "$metrics" | awk '/^xsigate_plugin_events_reconnects_total/ { n += $2 } END { print n + 0 }')"
awk -v i="$rss_idle" -v h="$rss_held" -v n="$users" \
  'BEGIN { printf "xsigate rss idle %.1f MiB, holding %.1f MiB: %.1f KiB per channel set\n", i / 1024, h / 1024, (h - i) / n }'
awk -v a="$after" -v b="$before" -v s="$from" -v e="$to" -v hz="$hz" \
  'BEGIN { printf "xsigate cpu while holding: %.1f%% of one core\n", 100 * (a - b) / hz / (e - s) }'
stop
echo
fi

if [ -n "$heap" ]; then
  wait "$recorder" 2>/dev/null || true
  # heaptrack compresses with zstd when it can, else with gzip.
  recording=$heap.zst
  [ -e "$recording" ] || recording=$heap.gz
  echo "# the heap alive at its peak (the logins), by what allocated it (heaptrack, $recording)"
  heaptrack_print -f "$recording" --print-peaks --peak-limit 30 --sub-peak-limit 3 \
    --print-allocators 0 --print-temporary 0 --print-leaks 0 | sed -n '/^PEAK MEMORY CONSUMERS/,$p'
  echo "# the heap alive while the sets were held (never freed: xsigate was killed), by what allocated it"
  heaptrack_print -f "$recording" --print-peaks 0 --print-allocators 0 --print-temporary 0 \
    --print-leaks 1 --peak-limit 30 --sub-peak-limit 3 | sed -n '/^MEMORY LEAKS/,$p'
  exit 0
fi

echo "# 2. one enterprise-level channel set: $rate DND changes/s over $event_users users for ${seconds}s"
start events 'level = "service_provider"
service_provider = "generated"
packages = ["Do Not Disturb"]' firebase
until [ "$(metric 'xsigate_plugin_events_channels{plugin="events",provider="bench",state="open"}')" = "1" ]; do sleep 0.2; done
before=$(cpu_ticks "$xsigate") from=$(date +%s.%N)
"$root/target/release/events-load" drive --control "http://$control" \
  --gateway "http://127.0.0.1:$xsigate_port" --tap-user tap@tap.bench --users "$event_users" \
  --rate "$rate" --seconds "$seconds" --firebase "http://$firebase"
after=$(cpu_ticks "$xsigate") to=$(date +%s.%N)
acks=$(curl -fs "http://$control/acks")
echo "acknowledged (known, 200): $(echo "$acks" | grep -o '"status":"200","known":true' | wc -l) of $(echo "$acks" | grep -o '"event_id"' | wc -l) acknowledgements"
echo "ack failures: $(metric 'xsigate_plugin_events_ack_failures_total{plugin="events",provider="bench"}')"
awk -v a="$after" -v b="$before" -v s="$from" -v e="$to" -v hz="$hz" \
  'BEGIN { printf "xsigate cpu: %.1f%% of one core\n", 100 * (a - b) / hz / (e - s) }'
echo "firebase writes ok $(metric 'xsigate_plugin_firebase_writes_total{plugin="firebase",provider="bench",result="ok"}'), failed $(metric 'xsigate_plugin_firebase_writes_total{plugin="firebase",provider="bench",result="failed"}')"
echo "xsigate rss: $(rss_kib "$xsigate") KiB"
stop
echo

if [ "$watchers" -gt 0 ]; then
echo "# 3. busy lamp field: $watchers watchers of 20 users each; $rate DND changes/s over $event_users users for ${seconds}s"
start blf 'level = "service_provider"
service_provider = "generated"
packages = ["Do Not Disturb", "Advanced Call"]' firebase
until [ "$(metric 'xsigate_plugin_events_channels{plugin="events",provider="bench",state="open"}')" = "1" ]; do sleep 0.2; done
"$root/target/release/events-load" blf-lists --xsp "http://$xsp1" --watchers "$watchers" \
  --first "$event_users" --monitored 20 --event-users "$event_users"
"$root/target/release/events-load" login --gateway "http://127.0.0.1:$xsigate_port" \
  --first "$event_users" --users "$watchers"
# Every watcher's list read and its lamps written (bounded wait).
for _ in $(seq 1 600); do
  [ "$(metric 'xsigate_plugin_firebase_blf_reads_total{plugin="firebase",provider="bench",result="ok"}')" -ge "$watchers" ] && break
  sleep 0.2
done
echo "watchers $(metric 'xsigate_plugin_firebase_blf_watchers{plugin="firebase",provider="bench"}'), lists read $(metric 'xsigate_plugin_firebase_blf_reads_total{plugin="firebase",provider="bench",result="ok"}'), lamps written at login $(metric 'xsigate_plugin_firebase_blf_lamp_writes_total{plugin="firebase",provider="bench"}')"
before=$(cpu_ticks "$xsigate") from=$(date +%s.%N)
"$root/target/release/events-load" drive --control "http://$control" \
  --gateway "http://127.0.0.1:$xsigate_port" --tap-user tap@tap.bench --users "$event_users" \
  --rate "$rate" --seconds "$seconds" --firebase "http://$firebase"
after=$(cpu_ticks "$xsigate") to=$(date +%s.%N)
awk -v a="$after" -v b="$before" -v s="$from" -v e="$to" -v hz="$hz" \
  'BEGIN { printf "xsigate cpu: %.1f%% of one core\n", 100 * (a - b) / hz / (e - s) }'
echo "firebase writes ok $(metric 'xsigate_plugin_firebase_writes_total{plugin="firebase",provider="bench",result="ok"}'), failed $(metric 'xsigate_plugin_firebase_writes_total{plugin="firebase",provider="bench",result="failed"}'); lamps written $(metric 'xsigate_plugin_firebase_blf_lamp_writes_total{plugin="firebase",provider="bench"}')"
echo "xsigate rss: $(rss_kib "$xsigate") KiB"
stop
fi
