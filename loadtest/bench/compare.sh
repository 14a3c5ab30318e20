#!/usr/bin/env bash
# Tern vs NATS core vs NATS JetStream: the same p2p workload (users, devices, rate,
# payload, duration, latency method) back to back on this machine, plus the memory of
# idle connections (Tern's gateway vs nats-server, same number of connections).
#
# Knobs (environment):
#   RATE      messages/s offered, all senders together          (default 50000)
#   DURATION  seconds of sending per system                      (default 20)
#   USERS     users; each has DEVICES connections                (default 5000)
#   DEVICES   devices online per user                            (default 2)
#   PAYLOAD   message text bytes                                 (default 64)
#   WORKERS   load-generator worker processes, the same for every system
#             (default: one per core)
#   TICK      the workers' tick, µs (--coalesce-us: a busy worker wakes once per tick;
#             sends go out and frames are read up to one tick late, inside the
#             measured latency) (default: the harness's default)
#   CONNS     idle connections for the memory comparison         (default 10000)
#   HOLD      seconds the idle connections are held              (default 10)
#   RAMP_P99  login ramp: p99 login latency bound in ms           (default 20)
#   RAMP_CONNS logins per ramp step                              (default 10000)
#   LOADTEST  harness command (default: "target/release/tern loadtest")
#   SKIP_BUILD=1 to use the binaries already built
#   PORT_OFFSET added to every port this script listens on (default 0), so two
#             checkouts can benchmark on one machine
#   P2P_ONLY=1 to skip the idle-connection (memory and login ramp) runs
#   CQL=1     also run Tern on its CQL backend (row `tern_cql`): a one-node Apache
#             Cassandra from scripts/cassandra on 127.0.0.1:9042 (started if none answers
#             there, and then stopped at the end; TERN_CQL_NODES=host:port,... uses
#             another cluster), a fresh keyspace per run (bench_<unix time>, left in
#             place: drop it with cqlsh on a cluster you keep). Its server CPU counts the
#             Cassandra process as well (started here, or found by pgrep). Under quiet.sh,
#             a node started from another checkout is paused unless QUIET_KEEP_JAVA=1.
#   RAMP_MSGS=B also find each system's saturation: `tern loadtest ramp` with a p99
#             bound of B ms (Tern, Tern on CQL with CQL=1, and JetStream), on the same
#             server right after its p2p run; RAMP_START (default 2000), RAMP_STEP
#             (default 2000), RAMP_MAX (default 60000) msgs/s, RAMP_SECS s per step
#             (default 10)
# Every p2p row carries the server's own CPU per message (all its threads, the same
# window as the generator's) beside the generator's.
# Output: the comparison table on stdout, target/bench/compare.json, compare.html and
# every run's own JSON/HTML in target/bench/.
#
# Limits: a process here holds at most 20,000 descriptors. The harness spreads its
# connections over worker processes itself; Tern's connect run uses one gateway per
# 15,000 connections (all sharing one logic tier); nats-server is one process, so keep
# CONNS and USERS × DEVICES under ~19,000 when comparing with NATS.
set -euo pipefail

RATE=${RATE:-50000}
DURATION=${DURATION:-20}
USERS=${USERS:-5000}
DEVICES=${DEVICES:-2}
PAYLOAD=${PAYLOAD:-64}
WORKERS=${WORKERS:-$(nproc)}
TICK=${TICK:-}
CONNS=${CONNS:-10000}
HOLD=${HOLD:-10}
RAMP_P99=${RAMP_P99:-20}
RAMP_CONNS=${RAMP_CONNS:-10000}
RAMP_MSGS=${RAMP_MSGS:-}
RAMP_START=${RAMP_START:-2000}
RAMP_STEP=${RAMP_STEP:-2000}
RAMP_MAX=${RAMP_MAX:-60000}
RAMP_SECS=${RAMP_SECS:-10}
CQL=${CQL:-}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/target/bench
mkdir -p "$OUT"
rm -f "$OUT"/p2p-*.json "$OUT"/ramp-*.json "$OUT"/connect-*.json "$OUT"/compare.json
TERN=$ROOT/target/release/tern
read -r -a LT <<<"${LOADTEST:-$TERN loadtest}"

if ! command -v nats-server >/dev/null 2>&1; then
  echo "== installing nats-server (Debian package)"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server
fi
if [[ -z "${SKIP_BUILD:-}" ]]; then
  echo "== building tern (release, with the NATS peer)"
  (cd "$ROOT" && cargo build --release --features tern-loadtest/nats)
fi

WORK=$(mktemp -d /tmp/tern-bench.XXXXXX)
PIDS=()
STARTED_CASSANDRA=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n "$STARTED_CASSANDRA" ]]; then "$ROOT/scripts/cassandra" stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

SECRET="bench-secret-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
O=${PORT_OFFSET:-0}
HTTP=127.0.0.1:$((18080 + O))
LINK=127.0.0.1:$((18100 + O))
NATS_PORT=$((14222 + O))
NATS=127.0.0.1:$NATS_PORT
cat >"$WORK/tern.toml" <<EOF
data_dir = "$WORK/data"
log = "warn"
[gateway]
# Load-test clients send and receive far faster than people do.
inbound_frames_per_sec = 1000000
outbound_queue_frames = 65536
[messages]
sends_per_sec = 1000000
[[apps]]
id = 10000
secret = "$SECRET"
admins = ["admin"]
login_model = 4
EOF
export TERN_SECRET=$SECRET

# start LOGFILE CMD... : runs CMD in the background, waits for its listen line.
start() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 300); do
    if grep -q -e " listening " -e "Server is ready" "$log" 2>/dev/null; then
      STARTED=$pid
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "failed to start: $*" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "timed out starting: $*" >&2; exit 1
}
stop() { kill "$@" 2>/dev/null || true; for p in "$@"; do wait "$p" 2>/dev/null || true; done; }

# One argument list for every system: the same users × devices connections from the same
# number of worker processes (the connection shape), the same rate, payload and duration.
P2P=(--users "$USERS" --devices "$DEVICES" --workers "$WORKERS" --rate "$RATE" --duration "$DURATION"
  --payload "$PAYLOAD" --out-dir "$OUT")
if [[ -n "$TICK" ]]; then P2P+=(--coalesce-us "$TICK"); fi
STATUS=0

RAMP=(--users "$USERS" --devices "$DEVICES" --workers "$WORKERS" --payload "$PAYLOAD" --out-dir "$OUT"
  --start-rate "$RAMP_START" --step-rate "$RAMP_STEP" --max-rate "$RAMP_MAX" --step-duration "$RAMP_SECS"
  --p99-bound-ms "${RAMP_MSGS:-10}")
if [[ -n "$TICK" ]]; then RAMP+=(--coalesce-us "$TICK"); fi

# tern_p2p SYSTEM CONFIG [EXTRA_SERVER_PID]: Tern all-in-one on CONFIG, a p2p run (and a
# message ramp with RAMP_MSGS), reported as SYSTEM.
tern_p2p() {
  local system=$1 config=$2 extra_pid=${3:-}
  rm -rf "$WORK/data"
  start "$WORK/$system-all.log" "$TERN" all --config "$config" --http-addr "$HTTP" \
    --tcp-addr 127.0.0.1:$((18200 + O)) --ws-addr 127.0.0.1:$((18300 + O)) --link-addr "$LINK"
  TERN_PID=$STARTED
  local pids=(--server-pid "$TERN_PID")
  if [[ -n "$extra_pid" ]]; then pids+=(--server-pid "$extra_pid"); fi
  "${LT[@]}" p2p --system "$system" --addr 127.0.0.1:$((18200 + O)) --http "$HTTP" "${pids[@]}" "${P2P[@]}" || STATUS=1
  if [[ -n "$RAMP_MSGS" ]]; then
    echo "== $system ramp: message rate raised until p99 passes $RAMP_MSGS ms"
    "${LT[@]}" ramp --system "$system" --addr 127.0.0.1:$((18200 + O)) --http "$HTTP" \
      "${pids[@]}" "${RAMP[@]}" || STATUS=1
  fi
  stop "$TERN_PID"
  # Anything the server warned about under this load (log level warn): storage driver
  # errors, refused work, kicks.
  local n
  n=$(grep -c -E "WARN|ERROR" "$WORK/$system-all.log" || true)
  echo "== $system server log: $n warning/error lines"
  if [[ "$n" -gt 0 ]]; then
    grep -E "WARN|ERROR" "$WORK/$system-all.log" | sed -E 's/\x1b\[[0-9;]*m//g; s/^[^ ]+ +//' | cut -c1-160 | sort | uniq -c | sort -rn | head -n 8
  fi
}

echo "== tern p2p: all-in-one, embedded store, default durability"
tern_p2p tern "$WORK/tern.toml"

if [[ -n "$CQL" ]]; then
  echo "== tern p2p: all-in-one, CQL backend (Apache Cassandra, consistency ONE)"
  CQL_NODES=${TERN_CQL_NODES:-}
  if [[ -z "$CQL_NODES" ]]; then
    if ! "$ROOT/scripts/cassandra" status >/dev/null 2>&1; then STARTED_CASSANDRA=1; fi
    CQL_NODES=$("$ROOT/scripts/cassandra" start)
  fi
  CASSANDRA_PID=$(cat "$ROOT/target/cassandra/cassandra.pid" 2>/dev/null || pgrep -f CassandraDaemon | head -n 1 || true)
  NODES_TOML=$(echo "$CQL_NODES" | tr ',' '\n' | sed 's/.*/"&"/' | paste -sd, -)
  { cat "$WORK/tern.toml"; printf '[storage]\nbackend = "scylla"\n[storage.scylla]\nnodes = [%s]\nkeyspace = "bench_%s"\nconsistency = "one"\n' \
      "$NODES_TOML" "$(date +%s)"; } >"$WORK/tern-cql.toml"
  "$TERN" migrate --config "$WORK/tern-cql.toml" >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; exit 1; }
  tern_p2p tern_cql "$WORK/tern-cql.toml" "$CASSANDRA_PID"
fi

if [[ -z "${P2P_ONLY:-}" ]]; then
echo "== tern connect: $CONNS idle connections, gateway RSS (logic in its own process)"
rm -rf "$WORK/data"
start "$WORK/tern-logic.log" "$TERN" logic --config "$WORK/tern.toml" --http-addr "$HTTP" --link-addr "$LINK"
LOGIC_PID=$STARTED
GW_ARGS=()
GW_PIDS=()
for k in $(seq 0 $(((CONNS - 1) / 15000))); do
  start "$WORK/tern-gw$k.log" "$TERN" gateway --config "$WORK/tern.toml" --link-addr "$LINK" \
    --tcp-addr "127.0.0.1:$((18210 + O + k))" --ws-addr "127.0.0.1:$((18310 + O + k))"
  GW_PIDS+=("$STARTED")
  GW_ARGS+=(--addr "127.0.0.1:$((18210 + O + k))" --gateway-pid "$STARTED")
done
sleep 1
"${LT[@]}" connect --conns "$CONNS" --hold "$HOLD" --http "$HTTP" "${GW_ARGS[@]}" --out-dir "$OUT" || STATUS=1
echo "== tern connect ramp: login rate raised until p99 login latency passes $RAMP_P99 ms"
"${LT[@]}" connect --conns "$RAMP_CONNS" --ramp-p99-ms "$RAMP_P99" --http "$HTTP" "${GW_ARGS[@]}" \
  --out-dir "$OUT" --name connect-ramp-tern || STATUS=1
stop "${GW_PIDS[@]}" "$LOGIC_PID"

echo "== nats-server connect: $CONNS idle connections (a fresh server, as for Tern)"
start "$WORK/nats-connect.log" nats-server -a 127.0.0.1 -p "$NATS_PORT"
NATS_PID=$STARTED
"${LT[@]}" connect --target nats-core --addr "$NATS" --conns "$CONNS" --hold "$HOLD" \
  --gateway-pid "$NATS_PID" --out-dir "$OUT" || STATUS=1
echo "== nats-server connect ramp: connection rate raised until p99 CONNECT latency passes $RAMP_P99 ms"
"${LT[@]}" connect --target nats-core --addr "$NATS" --conns "$RAMP_CONNS" --ramp-p99-ms "$RAMP_P99" \
  --out-dir "$OUT" --name connect-ramp-nats_core || STATUS=1
stop "$NATS_PID"
fi

echo "== nats-server p2p: core, then JetStream (file storage)"
start "$WORK/nats.log" nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/nats"
NATS_PID=$STARTED
"${LT[@]}" p2p --target nats-core --addr "$NATS" --server-pid "$NATS_PID" "${P2P[@]}" || STATUS=1
"${LT[@]}" p2p --target jetstream --addr "$NATS" --server-pid "$NATS_PID" "${P2P[@]}" || STATUS=1
if [[ -n "$RAMP_MSGS" ]]; then
  echo "== jetstream ramp: message rate raised until p99 passes $RAMP_MSGS ms"
  "${LT[@]}" ramp --target jetstream --addr "$NATS" --server-pid "$NATS_PID" "${RAMP[@]}" || STATUS=1
fi
stop "$NATS_PID"

echo "== comparison (RATE=$RATE DURATION=$DURATION USERS=$USERS DEVICES=$DEVICES WORKERS=$WORKERS TICK=${TICK:-default} PAYLOAD=$PAYLOAD CONNS=$CONNS${RAMP_MSGS:+ RAMP_MSGS=$RAMP_MSGS ms from $RAMP_START by $RAMP_STEP}${CQL:+ CQL=1})"
FILES=()
for f in p2p-tern p2p-tern_cql p2p-nats_core p2p-jetstream ramp-tern ramp-tern_cql ramp-jetstream \
  connect-tern connect-nats_core connect-ramp-tern connect-ramp-nats_core; do
  [[ -f "$OUT/$f.json" ]] && FILES+=("$OUT/$f.json")
done
"${LT[@]}" compare "${FILES[@]}" --out-dir "$OUT" --name compare
exit $STATUS
