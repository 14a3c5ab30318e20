#!/usr/bin/env bash
# Idle-connection memory and login rate of Tern alone: one `tern logic` and
# GATEWAYS `tern gateway` processes on loopback, CONNS authenticated connections spread
# over them by `tern loadtest connect`, gateway RSS per connection and kernel memory
# reported by the harness.
#
# Knobs (environment):
#   CONNS     connections in all                 (default 15000)
#   GATEWAYS  gateway processes (≤ 15,000 conns each: a process holds < 20,000 fds)
#             (default: one per 15,000 connections)
#   HOLD      seconds the connections are held   (default 5)
#   RATE      harness connect rate, logins/s     (default 20000)
#   RAMP      if set, run `connect --ramp` with this p99 bound in ms instead
#   TERN      binary (default target/release/tern)
#   BASE      first of the ports used (default: random in 21000..31000)
#   EXTRA     extra arguments for `tern loadtest connect`
#   CPUSTAT   if set, print CPU per process (user/kernel) and the machine's split over
#             the busy window (bench/cpustat.py; CPUSTAT=series adds one line per CPUSTAT_INTERVAL, default 0.5 s)
#   WARMUP    if set, first log the same users in (and out) at this rate, so the measured
#             run finds them in logic's caches (a reconnect, not a first login)
#   METRICS   if set, print the login stage metrics of logic and every gateway after the
#             run (accept → answer, the link round trip, logic's batch size and time)
#   LOGIC_EXTRA / GATEWAY_EXTRA  extra lines for the config's [link] / [gateway] sections
set -euo pipefail
CONNS=${CONNS:-15000}
GATEWAYS=${GATEWAYS:-$(((CONNS + 14999) / 15000))}
HOLD=${HOLD:-5}
RATE=${RATE:-20000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TERN=${TERN:-$ROOT/target/release/tern}
OUT=$ROOT/target/bench
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/tern-connect.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
SECRET="bench-secret-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
# Ports from BASE (random by default: other runs may share the machine).
BASE=${BASE:-$((21000 + RANDOM % 10000 / 100 * 100))}
HTTP=127.0.0.1:$BASE
LINK=127.0.0.1:$((BASE + 1))
METRICS_LINE=""
[[ -n "${METRICS:-}" ]] && METRICS_LINE='metrics_addr = "127.0.0.1:0"'
cat >"$WORK/tern.toml" <<EOT
data_dir = "$WORK/data"
log = "warn"
[gateway]
max_connections = 19000
$METRICS_LINE
${GATEWAY_EXTRA:-}
[link]
${LOGIC_EXTRA:-}
[[apps]]
id = 10000
secret = "$SECRET"
admins = ["admin"]
login_model = 4
EOT
export TERN_SECRET=$SECRET
start() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 300); do
    if grep -q " listening " "$log" 2>/dev/null; then STARTED=$pid; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "failed to start: $*" >&2; cat "$log" >&2; exit 1; fi
    sleep 0.1
  done
  echo "timed out starting: $*" >&2; exit 1
}
start "$WORK/logic.log" "$TERN" logic --config "$WORK/tern.toml" --http-addr "$HTTP" --link-addr "$LINK"
GW_ARGS=()
for k in $(seq 0 $((GATEWAYS - 1))); do
  start "$WORK/gw$k.log" "$TERN" gateway --config "$WORK/tern.toml" --link-addr "$LINK" \
    --tcp-addr "127.0.0.1:$((BASE + 10 + k))" --ws-addr "127.0.0.1:$((BASE + 30 + k))"
  GW_ARGS+=(--addr "127.0.0.1:$((BASE + 10 + k))" --gateway-pid "$STARTED")
done
sleep 1
if [[ -n "${CPUSTAT:-}" ]]; then
  SERIES=(); [[ "$CPUSTAT" == series ]] && SERIES=(--series)
  python3 "$ROOT/loadtest/bench/cpustat.py" "$TERN" "${CPUSTAT_INTERVAL:-0.5}" "${SERIES[@]}" &
  CPUSTAT_PID=$!
fi
PREFIX=()
if [[ -n "${WARMUP:-}" ]]; then
  PREFIX=(--user-prefix "warm$RANDOM-")
  "$TERN" loadtest connect --conns "$CONNS" --hold 0.1 --http "$HTTP" "${GW_ARGS[@]}" --connect-rate "$WARMUP" \
    --out-dir "$OUT" --name connect-warmup --quiet "${PREFIX[@]}" >/dev/null
  PREFIX+=(--no-import)
  sleep 1
fi
MODE=(--connect-rate "$RATE")
[[ -n "${RAMP:-}" ]] && MODE=(--ramp-p99-ms "$RAMP")
# shellcheck disable=SC2086
"$TERN" loadtest connect --conns "$CONNS" --hold "$HOLD" --http "$HTTP" "${GW_ARGS[@]}" "${MODE[@]}" "${PREFIX[@]}" \
  --out-dir "$OUT" ${EXTRA:-} || RC=$?
if [[ -n "${CPUSTAT_PID:-}" ]]; then kill -INT "$CPUSTAT_PID"; wait "$CPUSTAT_PID" || true; fi
if [[ -n "${METRICS:-}" ]]; then
  pick() { grep -E '^tern_(gateway_)?login' | grep -E 'quantile="0\.(5|99)"|quantile="1"|_count' || true; }
  echo "== logic"; curl -s "http://$HTTP/metrics" | pick
  for k in $(seq 0 $((GATEWAYS - 1))); do
    m=$(grep -o 'http://[0-9.:]*/metrics' "$WORK/gw$k.log" | head -1)
    echo "== gateway $k"; [[ -n "$m" ]] && curl -s "$m" | pick
  done
fi
exit "${RC:-0}"
