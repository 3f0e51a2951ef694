#!/usr/bin/env bash
# A login storm against proxied traffic, on loopback, in one run:
#   - xsi-sim with generated users answers the logins (idp-broadsoft reads each user's profile);
#   - nginx `return 200` with an XSI profile body is the upstream of the proxied requests, so
#     the storm's load on the simulator does not land on the proxied path;
#   - one xsigate serves both: provider `sim` (logins) and provider `bench` (proxied traffic).
# login-load sends proxied requests at a fixed rate, first alone, then while `logins` workers
# log in back to back, and prints p50/p99/p99.9 of both phases, the logins per second and the
# p99 ratio storm/idle. It also prints xsigate's resident memory and CPU during the storm.
#
# Usage: bench/login.sh [rate=1000] [seconds=10] [logins=100]
set -euo pipefail

rate=${1:-1000}
seconds=${2:-10}
logins=${3:-100}
source "$(dirname "$0")/common.sh"

"$root/scripts/install-deps" bench
cargo build --release --locked -p xsigate -p xsi-sim -p xsigate-idp-broadsoft -p xsigate-bench \
  --manifest-path "$root/Cargo.toml" >&2

upstream_port=19281 xsigate_port=19283 metrics_port=19284 sim_xsp=127.0.0.1:19285 sim_control=127.0.0.1:19286
user=alice@bench.example
path="/com.broadsoft.xsi-actions/v2.0/user/$user/profile"
auth="Basic $(printf '%s:%s' "$user" pw | base64)"
profile='<?xml version="1.0" encoding="ISO-8859-1"?><Profile xmlns="http://schema.broadsoft.com/xsi"><details><userId>alice@bench.example</userId><firstName>Alice</firstName></details></Profile>'

ports_free $upstream_port $xsigate_port $metrics_port 19285 19286

nginx_upstream_conf $upstream_port "$profile"
cat > "$work/xsigate.toml" <<CONF
$(server_toml "$work/data" "$xsigate_port" "$metrics_port")
[[plugins]]
name = "broadsoft"
path = "$root/target/release/libxsigate_idp_broadsoft.so"
[providers.bench]
domains = ["bench.example"]
xsp = ["http://127.0.0.1:$upstream_port"]
[providers.sim]
domains = ["sim.xsigate.test"]
xsp = ["http://$sim_xsp"]
plugins = ["broadsoft"]
CONF

nginx -c "$work/upstream.conf" -p "$work" -g 'daemon off;' & pids+=($!)
"$root/target/release/xsi-sim" --generate-users 1000 --xsp "$sim_xsp" --control "$sim_control" \
  2>/dev/null & pids+=($!)
"$root/target/release/xsigate" run -c "$work/xsigate.toml" 2>"$work/xsigate.log" & xsigate_pid=$!; pids+=($xsigate_pid)
wait_ready "$xsigate_pid" "$metrics_port" "$work/xsigate.log"
curl -fs -o /dev/null -H "Authorization: $auth" "http://127.0.0.1:$xsigate_port$path"

out="$work/out"
"$root/target/release/login-load" --gateway "http://127.0.0.1:$xsigate_port" --path "$path" \
  --authorization "$auth" --rate "$rate" --seconds "$seconds" --logins "$logins" > "$out" & load=$!
until grep -q '^idle' "$out"; do kill -0 "$load" 2>/dev/null || { cat "$out"; exit 1; }; sleep 0.1; done
before=$(cpu_ticks "$xsigate_pid") started=$(date +%s.%N)
wait "$load"
after=$(cpu_ticks "$xsigate_pid") ended=$(date +%s.%N)
hz=$(getconf CLK_TCK)

echo "# proxied GET at $rate req/s for ${seconds}s alone, then during $logins concurrent login workers"
cat "$out"
awk -v a="$after" -v b="$before" -v s="$started" -v e="$ended" -v hz="$hz" \
  'BEGIN { printf "xsigate cpu during storm: %.0f%% of one core\n", 100 * (a - b) / hz / (e - s) }'
echo "xsigate rss: $(rss_kib "$xsigate_pid") KiB (peak $(status_kib "$xsigate_pid" VmHWM) KiB)"
