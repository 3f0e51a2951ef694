#!/usr/bin/env bash
# Side-by-side proxy benchmark on loopback, in one run:
#   direct  - wrk -> upstream (nginx `return 200` with an XSI profile body)
#   nginx   - wrk -> nginx keepalive reverse proxy -> upstream
#   xsigate - wrk -> xsigate -> upstream
#   plugin  - wrk -> xsigate with a no-op request-filter plugin (plugins/fixtures/noop-filter)
#             on the provider -> upstream
#   baseline - with XSIGATE_BENCH_BASELINE: another xsigate binary (an earlier commit's, say)
#             on the same configuration -> upstream
# Same wrk threads, connections, duration and path for each. Prints req/s, p50, p99, the ratios
# xsigate/nginx, xsigate/direct, plugin/xsigate (and xsigate/baseline), the proxies' resident
# memory, and the CPU time a request costs each server in user space and in the kernel
# (`measure`). nginx and the xsigate targets are measured one after the other in each of
# several rounds, so that drift on a busy machine does not land on one of them; their figures
# are the means of the rounds.
#
# Usage: bench/proxy.sh [duration_seconds=10] [connections=32] [wrk_threads=1]
# Env:   XSIGATE_BENCH_EXTRA   extra TOML appended to both xsigate configs
#        XSIGATE_BENCH_PROFILE a file for a perf CPU profile of xsigate under one more round,
#                              summed up by phase (`profile_phases` in common.sh)
#        XSIGATE_BENCH_ROUNDS  rounds of nginx and the xsigate targets (default 3)
#        XSIGATE_BENCH_BASELINE an xsigate binary to measure beside this tree's, in the same rounds
#                              (before it in every other round: ABBA)
set -euo pipefail

duration=${1:-10}
connections=${2:-32}
threads=${3:-1}
source "$(dirname "$0")/common.sh"

"$root/scripts/install-deps" bench
profile_ready
cargo build --release --locked -p xsigate -p xsigate-fixture-noop-filter \
  --manifest-path "$root/Cargo.toml" >&2

upstream_port=19081 nginx_port=19082 xsigate_port=19083 metrics_port=19084
plugin_port=19085 plugin_metrics_port=19086 baseline_port=19087 baseline_metrics_port=19088
user=alice@bench.example
path="/com.broadsoft.xsi-actions/v2.0/user/$user/profile"
auth="Basic $(printf '%s:%s' "$user" pw | base64)"
profile='<?xml version="1.0" encoding="ISO-8859-1"?><Profile xmlns="http://schema.broadsoft.com/xsi"><details><userId>alice@bench.example</userId><firstName>Alice</firstName><lastName>Bench</lastName><number>2025550100</number><extension>0100</extension></details><additionalDetails><emailAddress>alice@bench.example</emailAddress></additionalDetails></Profile>'

# nginx's `return` takes a quoted string; the profile has no quotes of that kind.
nginx_upstream_conf $upstream_port "$profile"
cat > "$work/proxy.conf" <<EOF
worker_processes auto;
pid $work/proxy.pid;
error_log $work/proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream xsp { server 127.0.0.1:$upstream_port; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://xsp;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
extra=${XSIGATE_BENCH_EXTRA:-}
xsigate_config xsigate $xsigate_port $metrics_port "" "" "$extra"
xsigate_config baseline $baseline_port $baseline_metrics_port "" "" "$extra"
xsigate_config plugin $plugin_port $plugin_metrics_port \
  "[[plugins]]
name = \"noop\"
path = \"$root/target/release/libxsigate_fixture_noop_filter.so\"" '"noop"' "$extra"

ports_free $upstream_port $nginx_port $xsigate_port $plugin_port
nginx -c "$work/upstream.conf" -p "$work" -g 'daemon off;' & upstream_pid=$!; pids+=($upstream_pid)
nginx -c "$work/proxy.conf" -p "$work" -g 'daemon off;' & nginx_pid=$!; pids+=($nginx_pid)
"$root/target/release/xsigate" run -c "$work/xsigate.toml" 2>"$work/xsigate.log" & xsigate_pid=$!; pids+=($xsigate_pid)
"$root/target/release/xsigate" run -c "$work/plugin.toml" 2>"$work/plugin.log" & plugin_pid=$!; pids+=($plugin_pid)
wait_port $upstream_port $upstream_pid "Authorization: $auth"
wait_port $nginx_port $nginx_pid "Authorization: $auth"
wait_port $xsigate_port $xsigate_pid "Authorization: $auth"
wait_port $plugin_port $plugin_pid "Authorization: $auth"
baseline=${XSIGATE_BENCH_BASELINE:-}
if [ -n "$baseline" ]; then
  ports_free $baseline_port
  "$baseline" run -c "$work/baseline.toml" 2>"$work/baseline.log" & baseline_pid=$!; pids+=($baseline_pid)
  wait_port $baseline_port $baseline_pid "Authorization: $auth"
fi


read -r direct_rps direct_p50 direct_p99 direct_user direct_sys < <(measure $upstream_port "Authorization: $auth" $upstream_pid)
rounds=${XSIGATE_BENCH_ROUNDS:-3}
: > "$work/rounds.nginx"; : > "$work/rounds.xsigate"; : > "$work/rounds.plugin"; : > "$work/rounds.baseline"
measure_baseline() { measure $baseline_port "Authorization: $auth" $baseline_pid >> "$work/rounds.baseline"; }
for round in $(seq 1 $rounds); do
  measure $nginx_port "Authorization: $auth" $nginx_pid >> "$work/rounds.nginx"
  if baseline_first "$round"; then measure_baseline; fi
  measure $xsigate_port "Authorization: $auth" $xsigate_pid >> "$work/rounds.xsigate"
  measure $plugin_port "Authorization: $auth" $plugin_pid >> "$work/rounds.plugin"
  if [ -n "$baseline" ] && ! baseline_first "$round"; then measure_baseline; fi
done
read -r nginx_rps nginx_p50 nginx_p99 nginx_user nginx_sys < <(mean "$work/rounds.nginx")
read -r xsigate_rps xsigate_p50 xsigate_p99 xsigate_user xsigate_sys < <(mean "$work/rounds.xsigate")
read -r plugin_rps plugin_p50 plugin_p99 plugin_user plugin_sys < <(mean "$work/rounds.plugin")

nginx_master=$(cat "$work/proxy.pid")
printf '\nwrk -t%s -c%s -d%ss, GET %s, %s cores\n\n' "$threads" "$connections" "$duration" "$path" "$(nproc)"
table_head
table_row direct "$direct_rps" "$direct_p50" "$direct_p99" - "$direct_user" "$direct_sys"
table_row nginx "$nginx_rps" "$nginx_p50" "$nginx_p99" "$(tree_rss_kib "$nginx_master")" "$nginx_user" "$nginx_sys"
table_row xsigate "$xsigate_rps" "$xsigate_p50" "$xsigate_p99" "$(rss_kib $xsigate_pid)" "$xsigate_user" "$xsigate_sys"
table_row plugin "$plugin_rps" "$plugin_p50" "$plugin_p99" "$(rss_kib $plugin_pid)" "$plugin_user" "$plugin_sys"
if [ -n "$baseline" ]; then
  read -r baseline_rps baseline_p50 baseline_p99 baseline_user baseline_sys < <(mean "$work/rounds.baseline")
  table_row baseline "$baseline_rps" "$baseline_p50" "$baseline_p99" "$(rss_kib $baseline_pid)" "$baseline_user" "$baseline_sys"
fi
printf '\nnginx rounds (req/s):   %s\n' "$(awk '{ printf "%s ", $1 }' "$work/rounds.nginx")"
printf 'xsigate rounds (req/s): %s\n' "$(awk '{ printf "%s ", $1 }' "$work/rounds.xsigate")"
printf 'plugin rounds (req/s):  %s\n' "$(awk '{ printf "%s ", $1 }' "$work/rounds.plugin")"
printf '\nxsigate/nginx:  throughput %.2f  p99 %.2f\n' \
  "$(echo "$xsigate_rps / $nginx_rps" | bc -l)" "$(echo "$xsigate_p99 / $nginx_p99" | bc -l)"
printf 'xsigate/direct: throughput %.2f  p99 %.2f\n' \
  "$(echo "$xsigate_rps / $direct_rps" | bc -l)" "$(echo "$xsigate_p99 / $direct_p99" | bc -l)"
printf 'plugin/xsigate: throughput %.3f  p99 %.2f  (the cost of a no-op plugin hook)\n' \
  "$(echo "$plugin_rps / $xsigate_rps" | bc -l)" "$(echo "$plugin_p99 / $xsigate_p99" | bc -l)"
[ -z "$baseline" ] || printf 'xsigate/baseline: throughput %.2f  p99 %.2f\n' \
  "$(echo "$xsigate_rps / $baseline_rps" | bc -l)" "$(echo "$xsigate_p99 / $baseline_p99" | bc -l)"
# The hook's own time as the host measured it: steadier than the throughput ratio on a busy
# machine, where run-to-run drift can exceed the hook's cost.
curl -fs "http://127.0.0.1:$plugin_metrics_port/metrics" | awk '
  /^xsigate_plugin_call_duration_seconds_sum\{hook="request_filter"/ { sum = $2 }
  /^xsigate_plugin_call_duration_seconds_count\{hook="request_filter"/ { count = $2 }
  END { if (count > 0) printf "no-op request_filter hook: %d calls, mean %.2f us per call\n", count, sum / count * 1e6 }'
profile_phases $xsigate_pid $xsigate_port "Authorization: $auth"
