#!/usr/bin/env bash
# Scale of the simulator: one xsi-sim process holding N XSI-Events channels, each heartbeated by
# channel-load, all on loopback. Every channel's user is subscribed to Do Not Disturb and toggles
# it every 30 s, so events flow and every one is acknowledged. Prints the channels held,
# heartbeats sent/failed/echoed, events received and acknowledged, and the simulator's resident
# memory and CPU while holding.
#
# Usage: bench/sim-channels.sh [channels=10000] [hold_seconds=60] [heartbeat_seconds=10]
set -euo pipefail

channels=${1:-10000}
hold=${2:-60}
heartbeat=${3:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
xsp=127.0.0.1:19181
control=127.0.0.1:19199
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$root/scripts/install-deps" build
cargo build --release --locked -p xsi-sim -p xsigate-bench --manifest-path "$root/Cargo.toml" >&2
# Each channel is a socket on both sides, plus pooled heartbeat connections.
ulimit -n "$(ulimit -Hn)"

"$root/target/release/xsi-sim" --seed "$root/bench/sim-channels.toml" --generate-users "$channels" \
  --xsp "$xsp" --control "$control" 2>/dev/null & sim=$!; pids+=("$sim")
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://$control/channels" && break; sleep 0.1; done

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
kib() { awk -v key="$2" '$1 == key":" { print $2 }' "/proc/$1/status"; }
rss_idle=$(kib "$sim" VmRSS)

out=$(mktemp)
"$root/target/release/channel-load" --target "http://$xsp" --channels "$channels" \
  --heartbeat-seconds "$heartbeat" --hold-seconds "$hold" > "$out" & load=$!; pids+=("$load")
until grep -q '^ready' "$out"; do
  kill -0 "$load" 2>/dev/null || { cat "$out"; exit 1; }
  sleep 0.2
done
cpu_before=$(ticks "$sim"); held_from=$(date +%s.%N)
sleep $((hold - 2))
rss_held=$(kib "$sim" VmRSS)
open_in_sim=$(curl -fs "http://$control/channels" | grep -o '"channel_id"' | wc -l)
cpu_after=$(ticks "$sim"); held_to=$(date +%s.%N)
wait "$load"
cat "$out"

hz=$(getconf CLK_TCK)
printf '\nxsi-sim holding %s channels (heartbeat every %s s):\n' "$open_in_sim" "$heartbeat"
printf '  RSS idle %.1f MiB, holding %.1f MiB, peak %.1f MiB: %.1f KiB per channel\n' \
  "$(echo "$rss_idle/1024" | bc -l)" "$(echo "$rss_held/1024" | bc -l)" "$(echo "$(kib "$sim" VmHWM)/1024" | bc -l)" \
  "$(echo "($rss_held-$rss_idle)/$channels" | bc -l)"
printf '  CPU while holding: %.1f%% of one core\n' \
  "$(echo "100*($cpu_after-$cpu_before)/$hz/($held_to-$held_from)" | bc -l)"
