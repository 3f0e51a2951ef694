# Shared by the bench scripts: `source "$(dirname "$0")/common.sh"` after `set -euo pipefail`.
# Sets `root` (the repository) and `work` (a temporary directory), and on exit kills every pid
# in `pids` and removes `work`.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Fails when something already answers on one of the ports: it would be measured instead.
ports_free() {
  for port in "$@"; do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then echo "port $port is already in use" >&2; exit 1; fi
  done
}

# Writes $work/upstream.conf: one nginx worker on PORT answering every request 200 with BODY
# as an XSI document (BODY must not contain a single quote).
nginx_upstream_conf() {
  cat > "$work/upstream.conf" <<CONF
worker_processes 1;
pid $work/upstream.pid;
error_log $work/upstream.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$1;
    location / { default_type "text/xml;charset=ISO-8859-1"; return 200 '$2'; }
  }
}
CONF
}

# Prints "req_per_s p50_ms p99_ms user_us sys_us" of wrk against PORT and $path with HEADER,
# after a short warm-up, using $threads, $connections and $duration; fails on any non-2xx
# response. user_us and sys_us: the CPU time a request cost the serving processes PID... (each
# with its child processes: nginx's workers) in user space and in the kernel, from their
# /proc tick counts over the measured run. Equal kernel time and unequal user time, say, tell
# that two proxies make the same system calls and differ in their own work.
measure() {
  local port=$1 header=$2 before after
  shift 2
  wrk -t"$threads" -c"$connections" -d2s -H "$header" "http://127.0.0.1:$port$path" >/dev/null
  before=$(cpu_split "$@")
  wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -H "$header" \
    "http://127.0.0.1:$port$path" > "$work/wrk.$port"
  after=$(cpu_split "$@")
  awk -v before="$before" -v after="$after" -v hz="$(getconf CLK_TCK)" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /requests in/ { requests = $1 }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx/ { bad = $NF }
    END {
      if (bad > 0) { print "non-2xx responses: " bad > "/dev/stderr"; exit 1 }
      split(before, b); split(after, a)
      per = requests > 0 ? 1e6 / hz / requests : 0
      printf "%.0f %.3f %.3f %.2f %.2f\n", rps, p50, p99, (a[1] - b[1]) * per, (a[2] - b[2]) * per
    }
  ' "$work/wrk.$port"
}

# The results table of proxy.sh and inject.sh: its head, and a row
# `table_row TARGET REQ_PER_S P50_MS P99_MS RSS_KIB USER_US SYS_US` (RSS_KIB `-` for none).
table_head() { printf '%-8s %10s %9s %9s %10s %8s %8s\n' target req/s p50_ms p99_ms rss_MiB user_us sys_us; }
table_row() {
  local rss=$5
  [ "$rss" = - ] || rss=$(printf '%.1f' "$(echo "$rss / 1024" | bc -l)")
  printf '%-8s %10s %9s %9s %10s %8s %8s\n' "$1" "$2" "$3" "$4" "$rss" "$6" "$7"
}

# Whether round ROUND (from 1) measures XSIGATE_BENCH_BASELINE before this tree's xsigate: every
# other round, so that the two alternate ABBA and drift on a busy machine falls on both alike.
baseline_first() { [ -n "${XSIGATE_BENCH_BASELINE:-}" ] && [ $(($1 % 2)) -eq 0 ]; }

# The mean of each column of a file of `measure` lines.
mean() {
  awk '{ for (i = 1; i <= NF; i++) sum[i] += $i; n = NF }
    END { printf "%.0f", sum[1] / NR; for (i = 2; i <= n; i++) printf " %.3f", sum[i] / NR; print "" }' "$1"
}

# A field of /proc/PID/status in KiB: `status_kib PID VmRSS` (resident), `VmHWM` (peak).
status_kib() { awk -v key="$2" '$1 == key":" { print $2 }' "/proc/$1/status"; }
rss_kib() { status_kib "$1" VmRSS; }
# CPU clock ticks (user + system) PID has used; getconf CLK_TCK per second.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# "user system" CPU clock ticks the processes PID... and their child processes have used (the
# fields after the command name, which may hold spaces).
cpu_split() {
  local pid child
  for pid in "$@"; do
    # A child may exit between the listing and the reading: it no longer counts.
    for child in "$pid" $(pgrep -P "$pid"); do cat "/proc/$child/stat" 2>/dev/null || true; done
  done | sed 's/.*) //' | awk '{ user += $12; sys += $13 } END { printf "%d %d\n", user, sys }'
}

# With XSIGATE_BENCH_PROFILE=FILE: records a CPU profile of the xsigate process PID under wrk on
# PORT with HEADER (Linux perf, software clock: no hardware counters needed; DWARF call graphs,
# since release builds keep no frame pointers) into FILE for `perf report -i`, and prints where
# its user-space time goes by phase of the lean lane (bench/src/bin/profile_phases.rs).
profile_phases() {
  local pid=$1 port=$2 header=$3 perf_pid
  [ -n "${XSIGATE_BENCH_PROFILE:-}" ] || return 0
  perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" \
    -o "$XSIGATE_BENCH_PROFILE" 2>/dev/null &
  perf_pid=$!
  sleep 0.5
  measure "$port" "$header" >/dev/null
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  printf '\nxsigate profile (%s):\n' "$XSIGATE_BENCH_PROFILE"
  perf script -i "$XSIGATE_BENCH_PROFILE" -F ip,sym,dso 2>/dev/null \
    | "$root/target/release/profile-phases"
}
# Fails early when XSIGATE_BENCH_PROFILE is set and perf is missing, and builds the phase split.
profile_ready() {
  [ -n "${XSIGATE_BENCH_PROFILE:-}" ] || return 0
  command -v perf >/dev/null || { echo "XSIGATE_BENCH_PROFILE needs perf (Debian: apt-get install linux-perf)" >&2; exit 1; }
  cargo build --release --locked -p xsigate-bench --bin profile-phases \
    --manifest-path "$root/Cargo.toml" >&2
}

# Waits until the xsigate process PID answers /readyz on METRICS_PORT; shows its LOG and fails
# if it exits first.
wait_ready() {
  local pid=$1 metrics_port=$2 log=$3
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    curl -fs -o /dev/null "http://127.0.0.1:$metrics_port/readyz" && return 0
    sleep 0.05
  done
  echo "xsigate never became ready" >&2; cat "$log" >&2; exit 1
}
# A process and its children (nginx master + workers).
tree_rss_kib() {
  local total=0
  for pid in $1 $(pgrep -P "$1"); do total=$((total + $(rss_kib "$pid"))); done
  echo "$total"
}

# The `[server]` table of a bench's xsigate: data in DATA_DIR, no access log, an immediate stop,
# listening on 127.0.0.1:PORT with metrics on METRICS_PORT; SERVER_KEYS are more of its keys.
# server_toml DATA_DIR PORT METRICS_PORT [SERVER_KEYS]
server_toml() {
  cat <<EOF
[server]
data_dir = "$1"
access_log = false
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
${4:-}
[[server.listeners]]
address = "127.0.0.1:$2"
[server.metrics]
address = "127.0.0.1:$3"
EOF
}

# Writes $work/NAME.toml: an xsigate on 127.0.0.1:PORT (metrics on METRICS_PORT) whose provider
# `bench` (bench.example) is the XSP at $upstream_port; PLUGINS_TOML declares plugins,
# PROVIDER_PLUGINS lists the provider's (`"a", "b"`), EXTRA is appended.
# xsigate_config NAME PORT METRICS_PORT [PLUGINS_TOML] [PROVIDER_PLUGINS] [EXTRA]
xsigate_config() {
  cat > "$work/$1.toml" <<EOF
$(server_toml "$work/data-$1" "$2" "$3")
${4:-}
[providers.bench]
domains = ["bench.example"]
xsp = ["http://127.0.0.1:$upstream_port"]
plugins = [${5:-}]
${6:-}
EOF
}

# Waits until PORT answers (`/healthz`, or $path with HEADER), while the process that should
# serve it (PID) is alive: a port held by someone else would otherwise answer in its place.
# wait_port PORT PID [HEADER]
wait_port() {
  local port=$1 pid=$2 header=${3:-X-Bench: probe}
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || { echo "the server for port $port exited (port already in use?)" >&2; cat "$work"/*.err "$work"/*.log >&2 2>/dev/null; exit 1; }
    curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && return 0
    curl -fs -o /dev/null -H "$header" "http://127.0.0.1:$port$path" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $port never answered" >&2; cat "$work"/*.log >&2 2>/dev/null; exit 1
}
