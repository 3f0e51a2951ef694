#!/usr/bin/env bash
# Session injection benchmark on loopback, in one run: an authenticated GET of the profile
#   direct  - wrk -> upstream (nginx `return 200` with an XSI profile body)
#   nginx   - wrk -> nginx reverse proxy adding a static Authorization and Cookie -> upstream
#   xsigate - wrk (session cookie) -> xsigate: session lookup, CSRF/CORS rules, the xsi-session
#             plugin's authorization, Basic and JSESSIONID injection, response filter -> upstream
# The upstream answers every request, so it also accepts the login that opens the session.
# Prints req/s, p50, p99, the ratios xsigate/nginx and xsigate/direct, resident memory, and the
# CPU time a request costs each server in user space and in the kernel (`measure`).
# xsigate is measured in rounds alternating with nginx, so drift does not land on one of them.
# With XSIGATE_BENCH_BASELINE=BINARY, another xsigate binary (an earlier commit's, say) on the
# same configuration is measured in the same rounds (before xsigate in every other round: ABBA),
# and xsigate/baseline printed.
#
# Usage: bench/inject.sh [duration_seconds=10] [connections=32] [wrk_threads=1] [rounds=3]
# Env:   XSIGATE_BENCH_PROFILE a file for a perf CPU profile of xsigate under one more round,
#                              summed up by phase (`profile_phases` in common.sh)
set -euo pipefail

duration=${1:-10}
connections=${2:-32}
threads=${3:-1}
rounds=${4:-3}
source "$(dirname "$0")/common.sh"

"$root/scripts/install-deps" bench
profile_ready
cargo build --release --locked -p xsigate -p xsigate-idp-broadsoft -p xsigate-xsi-session \
  --manifest-path "$root/Cargo.toml" >&2

upstream_port=19091 nginx_port=19092 xsigate_port=19093 metrics_port=19094
baseline_port=19095 baseline_metrics_port=19096
user=alice@bench.example
password=bench-password
path="/com.broadsoft.xsi-actions/v2.0/user/$user/profile"
auth="Basic $(printf '%s:%s' "$user" "$password" | base64)"
xsp_cookie="JSESSIONID=0123456789ABCDEF0123456789ABCDEF"
profile='<?xml version="1.0" encoding="ISO-8859-1"?><Profile xmlns="http://schema.broadsoft.com/xsi"><details><userId>alice@bench.example</userId><firstName>Alice</firstName><lastName>Bench</lastName><number>2025550100</number><extension>0100</extension></details><additionalDetails><emailAddress>alice@bench.example</emailAddress></additionalDetails></Profile>'

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
      proxy_set_header Authorization "$auth";
      proxy_set_header Cookie "$xsp_cookie";
    }
  }
}
EOF
plugins_toml="[[plugins]]
name = \"broadsoft\"
path = \"$root/target/release/libxsigate_idp_broadsoft.so\"
[[plugins]]
name = \"session\"
path = \"$root/target/release/libxsigate_xsi_session.so\""
xsigate_config xsigate $xsigate_port $metrics_port "$plugins_toml" '"broadsoft", "session"'
xsigate_config baseline $baseline_port $baseline_metrics_port "$plugins_toml" '"broadsoft", "session"'
ports_free $upstream_port $nginx_port $xsigate_port
nginx -c "$work/upstream.conf" -p "$work" -g 'daemon off;' & upstream_pid=$!; pids+=($upstream_pid)
nginx -c "$work/proxy.conf" -p "$work" -g 'daemon off;' & nginx_pid=$!; pids+=($nginx_pid)
"$root/target/release/xsigate" run -c "$work/xsigate.toml" 2>"$work/xsigate.log" & xsigate_pid=$!; pids+=($xsigate_pid)
wait_port $upstream_port $upstream_pid
wait_port $nginx_port $nginx_pid
wait_port $xsigate_port $xsigate_pid

# Logs in once on the xsigate at PORT and prints the session; every measured request rides on it.
log_in() {
  local port=$1 session status other
  session=$(curl -fs -D - -o /dev/null -H 'content-type: application/json' \
    -d "{\"user\":\"$user\",\"password\":\"$password\"}" \
    "http://127.0.0.1:$port/api/access/services/idp/broadsoft" \
    | awk -F'[=;]' 'tolower($1) ~ /^set-cookie: xsigate_session/ { print $2 }')
  [ -n "$session" ] || { echo "login failed on port $port" >&2; cat "$work"/*.log >&2; exit 1; }
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: xsigate_session=$session" "http://127.0.0.1:$port$path")
  [ "$status" = 200 ] || { echo "the session's profile GET answered $status" >&2; exit 1; }
  other=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: xsigate_session=$session" \
    "http://127.0.0.1:$port/com.broadsoft.xsi-actions/v2.0/user/bob@bench.example/profile")
  [ "$other" = 403 ] || { echo "another user's profile answered $other, not 403" >&2; exit 1; }
  echo "$session"
}
session=$(log_in $xsigate_port)
baseline=${XSIGATE_BENCH_BASELINE:-}
if [ -n "$baseline" ]; then
  ports_free $baseline_port
  "$baseline" run -c "$work/baseline.toml" 2>"$work/baseline.log" & baseline_pid=$!; pids+=($baseline_pid)
  wait_port $baseline_port $baseline_pid
  baseline_session=$(log_in $baseline_port)
fi


read -r direct_rps direct_p50 direct_p99 direct_user direct_sys < <(measure $upstream_port "Authorization: $auth" $upstream_pid)
: > "$work/rounds.nginx"; : > "$work/rounds.xsigate"; : > "$work/rounds.baseline"
measure_baseline() {
  measure $baseline_port "Cookie: xsigate_session=$baseline_session" $baseline_pid >> "$work/rounds.baseline"
}
for round in $(seq 1 "$rounds"); do
  measure $nginx_port "X-Bench: static" $nginx_pid >> "$work/rounds.nginx"
  if baseline_first "$round"; then measure_baseline; fi
  measure $xsigate_port "Cookie: xsigate_session=$session" $xsigate_pid >> "$work/rounds.xsigate"
  if [ -n "$baseline" ] && ! baseline_first "$round"; then measure_baseline; fi
done
read -r nginx_rps nginx_p50 nginx_p99 nginx_user nginx_sys < <(mean "$work/rounds.nginx")
read -r xsigate_rps xsigate_p50 xsigate_p99 xsigate_user xsigate_sys < <(mean "$work/rounds.xsigate")

printf '\nwrk -t%s -c%s -d%ss x %s rounds, GET %s, %s cores\n\n' "$threads" "$connections" "$duration" "$rounds" "$path" "$(nproc)"
table_head
table_row direct "$direct_rps" "$direct_p50" "$direct_p99" - "$direct_user" "$direct_sys"
table_row nginx "$nginx_rps" "$nginx_p50" "$nginx_p99" "$(tree_rss_kib "$(cat "$work/proxy.pid")")" "$nginx_user" "$nginx_sys"
table_row xsigate "$xsigate_rps" "$xsigate_p50" "$xsigate_p99" "$(rss_kib $xsigate_pid)" "$xsigate_user" "$xsigate_sys"
if [ -n "$baseline" ]; then
  read -r baseline_rps baseline_p50 baseline_p99 baseline_user baseline_sys < <(mean "$work/rounds.baseline")
  table_row baseline "$baseline_rps" "$baseline_p50" "$baseline_p99" "$(rss_kib $baseline_pid)" "$baseline_user" "$baseline_sys"
fi
printf '\nnginx rounds (req/s):   %s\n' "$(awk '{ printf "%s ", $1 }' "$work/rounds.nginx")"
printf 'xsigate rounds (req/s): %s\n' "$(awk '{ printf "%s ", $1 }' "$work/rounds.xsigate")"
printf '\nxsigate/nginx:  throughput %.2f  p99 %.2f   (goal: throughput >= 0.9)\n' \
  "$(echo "$xsigate_rps / $nginx_rps" | bc -l)" "$(echo "$xsigate_p99 / $nginx_p99" | bc -l)"
printf 'xsigate/direct: throughput %.2f  p99 %.2f\n' \
  "$(echo "$xsigate_rps / $direct_rps" | bc -l)" "$(echo "$xsigate_p99 / $direct_p99" | bc -l)"
[ -z "$baseline" ] || printf 'xsigate/baseline: throughput %.2f  p99 %.2f\n' \
  "$(echo "$xsigate_rps / $baseline_rps" | bc -l)" "$(echo "$xsigate_p99 / $baseline_p99" | bc -l)"
curl -fs "http://127.0.0.1:$metrics_port/metrics" | awk '
  /^xsigate_plugin_call_duration_seconds_sum\{hook="(request_filter|upstream_request_filter|response_filter)",plugin="session"/ { sum += $2 }
  /^xsigate_plugin_call_duration_seconds_count\{hook="request_filter",plugin="session"/ { count = $2 }
  END { if (count > 0) printf "xsi-session hooks: %d requests, mean %.2f us per request (three hooks)\n", count, sum / count * 1e6 }'
profile_phases $xsigate_pid $xsigate_port "Cookie: xsigate_session=$session"
