#!/usr/bin/env bash
# Runs a benchmark on a quiet machine: the other heavy work of a shared development host
# (builds, test runs, other checkouts' binaries) is paused while it runs.
#
# usage: QUIET_KEEP=/path/to/your/checkout loadtest/bench/quiet.sh CMD...
#
# Runs CMD with other heavy processes (rustc, cargo, java, binaries of other worktrees)
# paused with SIGSTOP, resumed at exit (also when quiet.sh is killed: the scanner resumes
# them when its parent is gone). Processes whose cwd or command line contains $QUIET_KEEP
# (your own worktree) are left running. Keep CMD short (a few minutes at most): it pauses
# every other helper's build. Cassandra (java) is paused too unless QUIET_KEEP_JAVA=1.
# Quiet runs are serialized machine-wide (flock): two measurements at once would pause
# each other's builds but share the CPU, and both would measure noise. Matching processes
# that start during the run are paused too (quiet-scan.py rescans four times a second).
# Knobs: QUIET_KEEP (required), QUIET_KEEP_JAVA=1, QUIET_LOCK (lock file path),
# QUIET_WORKTREES (prefix of other checkouts whose binaries are paused; default /work/wt-).
if [ -z "$QUIET_KEEP" ]; then echo "quiet.sh: set QUIET_KEEP to your worktree (e.g. /work/wt-me)" >&2; exit 2; fi
if [ -z "$QUIET_LOCKED" ]; then
  exec 9>"${QUIET_LOCK:-/tmp/tern-bench-quiet.lock}"
  flock 9
  export QUIET_LOCKED=1
fi
anc=""; a=$$
while [ "$a" -gt 1 ] 2>/dev/null; do anc="$anc,$a"; a=$(awk '{print $4}' /proc/$a/stat 2>/dev/null || echo 1); done
coproc SCAN { python3 "$(dirname "$0")/quiet-scan.py" "$anc" 9>&-; }
read -r _ <&"${SCAN[0]}"
cleanup() { [ -n "$CHILD" ] && kill "$CHILD" 2>/dev/null; kill "$SCAN_PID" 2>/dev/null; wait "$SCAN_PID" 2>/dev/null; }
trap cleanup EXIT
trap 'exit 143' TERM INT
sleep 1
"$@" 9>&- &
CHILD=$!
wait "$CHILD"; rc=$?
CHILD=""
exit $rc
