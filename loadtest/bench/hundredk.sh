#!/usr/bin/env bash
# 100,000 idle authenticated connections on this machine (issue 13): GATEWAYS gateway
# processes (≤ 15,000 connections each: a process holds < 20,000 fds) sharing ONE logic
# process, and as many load-generator worker processes (`tern loadtest connect` spawns
# one per 15,000 connections). Reports the login figures, gateway RSS per idle
# connection and kernel memory per connection (both socket ends: TCP buffers + slab).
#
# With SYSCTL=deploy (the default) the kernel knobs of deploy/99-tern.conf are applied
# for the run and the previous values restored at exit (needs root; skipped with a
# note otherwise); SYSCTL=keep runs with the machine's own settings, for comparison.
# The run is bounded (TIMEOUT seconds) and cleans up its processes and data.
#
# Knobs (environment): CONNS (100000), GATEWAYS (7), RATE logins/s (10000), HOLD s (10),
# SYSCTL (deploy|keep), TIMEOUT s (420), TERN (target/release/tern), EXTRA (passed on).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONNS=${CONNS:-100000}
GATEWAYS=${GATEWAYS:-7}
RATE=${RATE:-10000}
HOLD=${HOLD:-10}
SYSCTL=${SYSCTL:-deploy}
TIMEOUT=${TIMEOUT:-420}
NAME=${NAME:-connect-100k-$SYSCTL}
CONF=$ROOT/deploy/99-tern.conf

# The knobs of the deploy profile that exist here (some, e.g. nf_conntrack_max, need a
# module this machine may not have loaded).
knobs() { grep -E '^[a-z]' "$CONF" | cut -d= -f1 | tr -d ' '; }
show() {
  for k in $(knobs); do
    v=$(sysctl -n "$k" 2>/dev/null | tr -s '\t ' ' ') || continue
    printf '  %-32s %s\n' "$k" "$v"
  done
}
SAVED=()
restore() {
  for kv in "${SAVED[@]}"; do sysctl -q -w "$kv" >/dev/null 2>&1 || true; done
}
trap restore EXIT
if [[ $SYSCTL == deploy ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "note: not root; running with the machine's own kernel settings" >&2
  else
    for k in $(knobs); do
      old=$(sysctl -n "$k" 2>/dev/null | tr -s '\t ' ' ') || continue
      SAVED+=("$k=$old")
    done
    # Apply what this kernel has; report what it refused.
    while IFS= read -r line; do
      [[ $line =~ ^[a-z] ]] || continue
      k=$(echo "${line%%=*}" | tr -d ' ')
      v=$(echo "${line#*=}" | sed 's/^ *//')
      sysctl -q -w "$k=$v" >/dev/null 2>&1 || echo "  (not applied here: $k)" >&2
    done <"$CONF"
  fi
fi
echo "== kernel settings for this run (SYSCTL=$SYSCTL)"
show
echo "== $CONNS connections over $GATEWAYS gateways, one logic, at $RATE logins/s"
STATUS=0
CONNS=$CONNS GATEWAYS=$GATEWAYS RATE=$RATE HOLD=$HOLD \
  EXTRA="--quiet --name $NAME ${EXTRA:-}" \
  timeout --kill-after=10 "$TIMEOUT" "$ROOT/loadtest/bench/connect.sh" || STATUS=$?
JSON=$ROOT/target/bench/$NAME.json
if [[ -f $JSON ]]; then
  python3 - "$JSON" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))["connect"]
def f(k, unit=""):
    v = c.get(k)
    return "n/a" if v is None else (f"{v:,.0f}{unit}" if isinstance(v, (int, float)) else str(v))
print(f"summary: {f('ok')} of {f('conns')} logged in, {f('failed')} failed; "
      f"gateway RSS per idle connection {f('bytes_per_idle_conn', ' B')}; "
      f"kernel per connection {f('kernel_bytes_per_conn', ' B')}")
EOF
fi
exit "$STATUS"
