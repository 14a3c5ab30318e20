#!/usr/bin/env bash
# The `group` scenario (issue 11) against one `tern logic` and GATEWAYS `tern gateway`
# processes on loopback (GATEWAYS=0: one `tern all`), embedded store in a temporary
# directory. Every argument goes to `tern loadtest group`.
#
#   loadtest/bench/group.sh --groups 1 --members 10000 --rate 10 --duration 20
#   GATEWAYS=3 loadtest/bench/group.sh --groups 1000 --members 50 --rate 1000 \
#       --max-rate 5000 --step-rate 1000 --duration 10
#
# Env: TERN (binary, default target/release/tern), GATEWAYS (default 2; a gateway holds
# < 20,000 connections, so 1,000 x 50 needs 3), GATEWAY_CORES (threads per gateway;
# default 1 when GATEWAYS > 0: several gateway processes on one machine share its cores,
# and one thread each keeps them from oversubscribing it — on the 2-core VM, 3 gateways
# x 2 threads held 1,000 x 50 at p99 <= 50 ms to 1,000 msgs/s, x 1 thread to 2,000;
# GATEWAY_CORES= (empty) gives each gateway its default, one thread per core),
# OUT (result directory), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
TERN=${TERN:-target/release/tern}
GATEWAYS=${GATEWAYS:-2}
if [ "$GATEWAYS" != 0 ]; then GATEWAY_CORES=${GATEWAY_CORES-1}; fi
WORK=$(mktemp -d /tmp/tern-group.XXXX)
SECRET=group-bench-secret-0123456789
BASE=${BASE:-$((21000 + RANDOM % 10000 / 100 * 100))}
HTTP=127.0.0.1:$BASE
LINK=127.0.0.1:$((BASE + 1))
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
cat >"$WORK/tern.toml" <<EOT
data_dir = "$WORK/data"
log = "warn"
[gateway]
${GATEWAY_CORES:+cores = $GATEWAY_CORES}
max_connections = 19000
inbound_frames_per_sec = 1000000
outbound_queue_frames = 65536
[messages]
sends_per_sec = 1000000
send_latency_target_ms = 0
[[apps]]
id = 10000
secret = "$SECRET"
admins = ["admin"]
login_model = 4
EOT
start() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 300); do
    if grep -q " listening " "$log" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "failed to start: $*" >&2; cat "$log" >&2; exit 1; fi
    sleep 0.1
  done
  echo "timed out starting: $*" >&2; exit 1
}
ADDRS=()
if [ "$GATEWAYS" = 0 ]; then
  start "$WORK/all.log" "$TERN" all --config "$WORK/tern.toml" --http-addr "$HTTP" --link-addr "$LINK" \
    --tcp-addr "127.0.0.1:$((BASE + 10))" --ws-addr "127.0.0.1:$((BASE + 50))"
  ADDRS+=(--addr "127.0.0.1:$((BASE + 10))")
else
  start "$WORK/logic.log" "$TERN" logic --config "$WORK/tern.toml" --http-addr "$HTTP" --link-addr "$LINK"
  for k in $(seq 1 "$GATEWAYS"); do
    start "$WORK/gw$k.log" "$TERN" gateway --config "$WORK/tern.toml" --link-addr "$LINK" \
      --tcp-addr "127.0.0.1:$((BASE + 10 + k))" --ws-addr "127.0.0.1:$((BASE + 50 + k))"
    ADDRS+=(--addr "127.0.0.1:$((BASE + 10 + k))")
  done
fi
TERN_SECRET=$SECRET "$TERN" loadtest group "${ADDRS[@]}" --http "$HTTP" --out-dir "${OUT:-target/loadtest}" --quiet "$@"
