#!/usr/bin/env bash
# What an idle client connection costs each proxy in memory, side by side in one run: browsers
# keep their connections open between requests, so an instance in front of many dialers holds
# far more idle connections than busy ones.
#   nginx   - nginx keepalive reverse proxy -> upstream (master and workers counted)
#   xsigate - xsigate, transparent, -> upstream (including the upstream connection each client
#             connection keeps for its next request)
#   baseline - with XSIGATE_BENCH_BASELINE: another xsigate binary on the same configuration
# For each, `idle-load` opens CONNECTIONS connections, sends one XSI GET on each, reads its
# answer, and holds them idle; the proxy's resident memory before and while they are held gives
# the KiB an idle connection costs.
#
# Usage: bench/idle.sh [connections=5000]
set -euo pipefail

connections=${1:-5000}
source "$(dirname "$0")/common.sh"

"$root/scripts/install-deps" bench
cargo build --release --locked -p xsigate -p xsigate-bench --bin xsigate --bin idle-load \
  --manifest-path "$root/Cargo.toml" >&2
# Every process here holds one descriptor a connection, and more.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((connections + 1024)) ]; then
  echo "$connections connections need more descriptors than the hard limit $(ulimit -Hn)" >&2
  exit 1
fi

upstream_port=19071 nginx_port=19072 xsigate_port=19073 metrics_port=19074
baseline_port=19075 baseline_metrics_port=19076
user=alice@bench.example
path="/com.broadsoft.xsi-actions/v2.0/user/$user/profile"
auth="Basic $(printf '%s:%s' "$user" pw | base64)"
profile='<?xml version="1.0" encoding="ISO-8859-1"?><Profile xmlns="http://schema.broadsoft.com/xsi"><details><userId>alice@bench.example</userId></details></Profile>'

nginx_upstream_conf $upstream_port "$profile"
cat > "$work/proxy.conf" <<EOF
worker_processes auto;
worker_rlimit_nofile $((connections * 2 + 1024));
pid $work/proxy.pid;
error_log $work/proxy.err warn;
events { worker_connections $((connections * 2 + 1024)); }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 600s;
  upstream xsp { server 127.0.0.1:$upstream_port; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://xsp;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
EOF
# Idle connections stay open for as long as the measurement takes.
clients="[server.clients]
idle_seconds = 600"
xsigate_config xsigate $xsigate_port $metrics_port "" "" "$clients"
xsigate_config baseline $baseline_port $baseline_metrics_port "" "" "$clients"
ports_free $upstream_port $nginx_port $xsigate_port
nginx -c "$work/upstream.conf" -p "$work" -g 'daemon off;' & upstream_pid=$!; pids+=($upstream_pid)
nginx -c "$work/proxy.conf" -p "$work" -g 'daemon off;' & nginx_pid=$!; pids+=($nginx_pid)
"$root/target/release/xsigate" run -c "$work/xsigate.toml" 2>"$work/xsigate.log" & xsigate_pid=$!; pids+=($xsigate_pid)
wait_port $upstream_port $upstream_pid "Authorization: $auth"
wait_port $nginx_port $nginx_pid "Authorization: $auth"
wait_port $xsigate_port $xsigate_pid "Authorization: $auth"
baseline=${XSIGATE_BENCH_BASELINE:-}
if [ -n "$baseline" ]; then
  ports_free $baseline_port
  "$baseline" run -c "$work/baseline.toml" 2>"$work/baseline.log" & baseline_pid=$!; pids+=($baseline_pid)
  wait_port $baseline_port $baseline_pid "Authorization: $auth"
fi

# Prints "rss_before_kib rss_held_kib" of the server PID (with its workers) around
# $connections idle connections to PORT.
held() {
  local port=$1 pid=$2 before after load
  # Warm: the first connections of a process grow its runtime's tables once.
  curl -fs -o /dev/null -H "Authorization: $auth" "http://127.0.0.1:$port$path"
  sleep 0.5
  before=$(tree_rss_kib "$pid")
  rm -f "$work/hold"; mkfifo "$work/hold"
  "$root/target/release/idle-load" --addr "127.0.0.1:$port" --path "$path" \
    --authorization "$auth" --connections "$connections" < "$work/hold" > "$work/held.$port" &
  load=$!
  exec 9> "$work/hold"
  for _ in $(seq 1 1200); do
    grep -q '^held' "$work/held.$port" 2>/dev/null && break
    kill -0 "$load" 2>/dev/null || break
    sleep 0.1
  done
  sleep 1
  after=$(tree_rss_kib "$pid")
  exec 9>&-
  wait "$load" || { echo "idle-load failed against port $port" >&2; exit 1; }
  echo "$before $after"
}

per_connection() { echo "scale=1; ($2 - $1) / $connections" | bc; }
read -r nginx_before nginx_after < <(held $nginx_port "$(cat "$work/proxy.pid")")
read -r xsigate_before xsigate_after < <(held $xsigate_port $xsigate_pid)
nginx_each=$(per_connection "$nginx_before" "$nginx_after")
xsigate_each=$(per_connection "$xsigate_before" "$xsigate_after")

printf '\n%s idle client connections, each after one GET %s\n\n' "$connections" "$path"
printf '%-9s %14s %12s %16s\n' target rss_before_MiB rss_held_MiB KiB_per_connection
row() { printf '%-9s %14.1f %12.1f %16s\n' "$1" "$(echo "$2 / 1024" | bc -l)" "$(echo "$3 / 1024" | bc -l)" "$4"; }
row nginx "$nginx_before" "$nginx_after" "$nginx_each"
row xsigate "$xsigate_before" "$xsigate_after" "$xsigate_each"
if [ -n "$baseline" ]; then
  read -r baseline_before baseline_after < <(held $baseline_port $baseline_pid)
  baseline_each=$(per_connection "$baseline_before" "$baseline_after")
  row baseline "$baseline_before" "$baseline_after" "$baseline_each"
fi
printf '\nxsigate/nginx: memory per idle connection %.2f\n' "$(echo "$xsigate_each / $nginx_each" | bc -l)"
if [ -n "$baseline" ]; then
  printf 'xsigate/baseline: memory per idle connection %.2f\n' "$(echo "$xsigate_each / $baseline_each" | bc -l)"
fi
