#!/usr/bin/env python3
"""Where the CPU goes during a benchmark: per process role, user vs kernel, and the
machine's own split (user / system / softirq / idle), sampled every INTERVAL seconds.

usage: cpustat.py BINARY [INTERVAL]   (runs until SIGINT/SIGTERM, then prints the table)

Processes are those whose executable is BINARY (e.g. target/release/tern); each is
named by its role from its command line: `logic`, `gateway`, `worker` (load-generator
workers, `loadtest worker`), `coordinator` (the `loadtest ...` process itself). Threads
are included (utime/stime of /proc/PID/stat cover the whole process). Softirq time is
charged by the kernel to whatever process was running when it ran, so on loopback a
sender's CPU includes part of the receiver's TCP input; the machine-wide softirq column
shows how much that is in all.

Only *busy* intervals are summed: those in which the generator's workers used at least
5 % of a CPU, so idle seconds before, between and after the phases of a run do not dilute
the shares. Consecutive busy intervals form a *phase*: in a `connect` run with a hold
the first phase is the connecting (logins), the last the teardown (every socket closed
at once), and each gets its own table beside the total. Use short intervals (0.1 s) to
tell the phases apart; per-process figures are counted in clock ticks (1/HZ s), so an
interval's shares are coarse and only sums over many intervals are meaningful.
Output: one line per interval (--series) and the tables, in % of one CPU.
"""
import os
import signal
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def role(cmd):
    args = cmd.split("\0")
    if "worker" in args and "loadtest" in args:
        return "worker"
    if "loadtest" in args:
        return "coordinator"
    if "gateway" in args:
        return "gateway"
    if "logic" in args:
        return "logic"
    if "all" in args or len(args) <= 2:
        return "all"
    return "other"


def procs(binary):
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{pid}/exe") != binary:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        out[int(pid)] = (role(cmd), int(fields[11]), int(fields[12]))
    return out


def machine():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return {"user": user + nice, "system": system + irq, "softirq": softirq, "idle": idle + iowait, "steal": steal}


def accumulate(into, per, machine_ticks):
    """Adds one interval's per-role (user, system) ticks and machine ticks to `into`
    ([seconds, per-role, machine]), as a phase or the run's total."""
    for r, (u, s) in per.items():
        a = into[1].setdefault(r, [0, 0])
        a[0] += u
        a[1] += s
    for k, v in machine_ticks.items():
        into[2][k] = into[2].get(k, 0) + v


def main():
    binary = os.path.realpath(sys.argv[1])
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    series = "--series" in sys.argv
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    prev, prev_m = procs(binary), machine()
    phases, in_phase = [], False
    t_prev = time.monotonic()
    while not stop:
        time.sleep(interval)
        now, now_m, t = procs(binary), machine(), time.monotonic()
        dt = t - t_prev
        per = {}
        for pid, (r, u, s) in now.items():
            pu, ps = prev.get(pid, (r, u, s))[1:] if pid in prev else (0, 0)
            a = per.setdefault(r, [0, 0])
            a[0] += u - pu
            a[1] += s - ps
        dm = {k: now_m[k] - prev_m[k] for k in now_m}
        prev, prev_m, t_prev = now, now_m, t
        w = per.get("worker", [0, 0])
        if (w[0] + w[1]) / HZ < 0.05 * dt:
            in_phase = False
            continue
        if not in_phase:
            phases.append([0.0, {}, {}])
            in_phase = True
        ph = phases[-1]
        ph[0] += dt
        accumulate(ph, per, dm)
        if series:
            cells = " ".join(f"{r}={100*u/HZ/dt:.0f}u+{100*s/HZ/dt:.0f}s" for r, (u, s) in sorted(per.items()))
            mach = " ".join(f"{k}={100*v/HZ/dt:.0f}" for k, v in dm.items())
            print(f"cpustat {cells} | machine {mach}", flush=True)
    if not phases:
        print("cpustat: the workers never ran")
        return
    total = [sum(p[0] for p in phases), {}, {}]
    for _, per, m in phases:
        accumulate(total, per, m)
    named = [(f"phase {i + 1} of {len(phases)}", p) for i, p in enumerate(phases)] if len(phases) > 1 else []
    for name, (secs, per, m) in named + [("all busy intervals", total)]:
        print(f"cpustat: {name}: {secs:.1f} s, % of one CPU (CPU-seconds: multiply by the time)")
        print(f"{'process':<12} {'user':>6} {'kernel':>7} {'total':>6}")
        for r, (u, s) in sorted(per.items(), key=lambda x: -(x[1][0] + x[1][1])):
            print(f"{r:<12} {100*u/HZ/secs:6.1f} {100*s/HZ/secs:7.1f} {100*(u+s)/HZ/secs:6.1f}")
        print("machine      " + "  ".join(f"{k} {100*v/HZ/secs:.1f}" for k, v in m.items()))


if __name__ == "__main__":
    main()
