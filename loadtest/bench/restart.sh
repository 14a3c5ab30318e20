#!/usr/bin/env bash
# Restart time of the embedded store at growing data sizes: fill the store over the
# client protocol (`tern loadtest sync`), then restart Tern twice per size and measure
# the time from starting the process to `/healthz` answering "ready":
#   sigterm  a clean stop (the shutdown flushes memtables and empties the journal);
#   kill -9  a crash while `tern loadtest p2p` sends LOAD_RATE msgs/s.
# Sizes are cumulative: one data directory grows from one size to the next.
#
# Knobs (environment):
#   SIZES      stored messages to reach, ascending      (default "100000 1000000")
#   LOAD_RATE  msgs/s of the load killed by the kill -9 (default 2000)
#   LOAD_SECS  seconds of that load before the kill     (default 5)
#   FILL_STEP  messages per fill round                  (default 1000000)
#   PAUSE      a pgrep -f pattern of other work on this machine to SIGSTOP while a
#              restart is measured (e.g. "rustc|cargo"); the fills run beside it
#   KEEP=1     keep the work directory (data, logs)
#   TERN       the binary to test (default target/release/tern; implies SKIP_BUILD)
#   SKIP_BUILD=1 to use target/release/tern as built
# Output: one table on stdout; logs in the work directory.
set -euo pipefail

SIZES=${SIZES:-"100000 1000000"}
LOAD_RATE=${LOAD_RATE:-2000}
LOAD_SECS=${LOAD_SECS:-5}
FILL_STEP=${FILL_STEP:-1000000}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TERN=${TERN:-$ROOT/target/release/tern}
if [[ -z "${SKIP_BUILD:-}" && "$TERN" == "$ROOT/target/release/tern" ]]; then
  (cd "$ROOT" && cargo build --release)
fi

WORK=$(mktemp -d /tmp/tern-restart.XXXXXX)
SECRET=restart-bench-secret-0123456789
HTTP=127.0.0.1:18480
TCP=127.0.0.1:18490
cat >"$WORK/tern.toml" <<EOF
data_dir = "$WORK/data"
log = "warn"
[http]
addr = "$HTTP"
[gateway]
tcp_addr = "$TCP"
ws_addr = "127.0.0.1:18491"
inbound_frames_per_sec = 1000000
[link]
addr = "127.0.0.1:18492"
[messages]
sends_per_sec = 1000000
[[apps]]
id = 10000
secret = "$SECRET"
admins = ["admin"]
EOF

PID=
PAUSED=
pause() { [[ -n "${PAUSE:-}" ]] && PAUSED=$(pgrep -f "$PAUSE" | grep -vx "$$" | tr '\n' ' ') && kill -STOP $PAUSED 2>/dev/null; true; }
resume() { [[ -n "$PAUSED" ]] && kill -CONT $PAUSED 2>/dev/null; PAUSED=; }
cleanup() {
  resume
  [[ -n "$PID" ]] && kill -9 "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ -z "${KEEP:-}" ]]; then rm -rf "$WORK"; else echo "work directory: $WORK"; fi
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# Starts tern; sets READY_MS (process start to ready) and SUMMARY (what recovery did).
start() {
  local t0 body
  t0=$(now_ms)
  "$TERN" all --config "$WORK/tern.toml" >>"$WORK/tern.log" 2>&1 &
  PID=$!
  for _ in $(seq 6000); do
    body=$(curl -s "http://$HTTP/healthz" 2>/dev/null || true)
    if [[ "$body" == *'"status":"ready"'* ]]; then
      READY_MS=$(($(now_ms) - t0))
      SUMMARY=$(sed -n 's/.*"summary":"\([^"]*\)".*/\1/p' <<<"$body")
      return
    fi
    sleep 0.005
  done
  echo "tern did not get ready within 30 s; see $WORK/tern.log" >&2
  exit 1
}

stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }
crash() { kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

disk() { du -sb "$WORK/data" | cut -f1 | awk '{printf "%.0f MB", $1 / 1e6}'; }

lt() { TERN_SECRET=$SECRET "$TERN" loadtest "$@" --http "$HTTP" --addr "$TCP" --quiet; }

printf '%-12s %-9s %-9s %-14s %s\n' "messages" "data" "restart" "time to ready" "recovery"
stored=0
start
for size in $SIZES; do
  if ((size > stored)); then
    # Fills size - stored more, in rounds of at most FILL_STEP (one `sync` run each,
    # under its own user prefix; each also pulls what it stored, within its timeout).
    while ((stored < size)); do
      n=$((size - stored < FILL_STEP ? size - stored : FILL_STEP))
      lt sync --messages "$n" --user-prefix "fill$stored-" --out-dir "$WORK/out" \
        >>"$WORK/fill.log" 2>&1 || { echo "fill failed; see $WORK/fill.log" >&2; exit 1; }
      stored=$((stored + n))
    done
  fi
  pause
  stop
  start
  printf '%-12s %-9s %-9s %-14s %s\n' "$stored" "$(disk)" "sigterm" "$READY_MS ms" "$SUMMARY"

  lt p2p --users 500 --devices 1 --rate "$LOAD_RATE" --duration $((LOAD_SECS + 30)) \
    --user-prefix "load$size-" --out-dir "$WORK/out" >>"$WORK/load.log" 2>&1 &
  load=$!
  sleep "$LOAD_SECS"
  crash
  wait "$load" 2>/dev/null || true
  start
  resume
  printf '%-12s %-9s %-9s %-14s %s\n' "$stored" "$(disk)" "kill -9" "$READY_MS ms" "$SUMMARY"
done
stop
