#!/usr/bin/env python3
"""Helper of quiet.sh. SIGSTOPs heavy processes (see quiet.sh) now and every second after, until told to stop
(SIGTERM) or until its parent (quiet.sh) is gone; then SIGCONTs every process it stopped.
argv[1] = comma-separated pids never to stop (quiet.sh and its ancestors)."""
import os, signal, sys, time
protect = set(int(x) for x in sys.argv[1].split(',') if x)
protect.add(os.getpid())
parent = os.getppid()
keep = os.environ.get('QUIET_KEEP', '/nonexistent-keep')
WORKTREES = os.environ.get('QUIET_WORKTREES', '/work/wt-')
QUIET_WORKTREES_MARK = '/' + os.path.basename(WORKTREES.rstrip('/'))
keep_java = os.environ.get('QUIET_KEEP_JAVA', '0') == '1'
stopped = []
done = False
def finish(*_):
    global done
    done = True
signal.signal(signal.SIGTERM, finish)
signal.signal(signal.SIGINT, finish)
def heavy(cwd, cmd):
    if 'line_io_tools' in cmd or 'process_api' in cmd or 'quiet.sh' in cmd or 'quiet-scan' in cmd:
        return False  # the host's own tool processes and quiet runs
    if keep in cwd or keep in cmd:
        return False
    if any(tool in cmd for tool in ('rustc', 'cargo', 'rustfmt', 'clippy-driver')):
        return True
    if not keep_java and 'java' in cmd:
        return True
    if QUIET_WORKTREES_MARK in cmd and '/target/' in cmd:
        return True
    # Anything else another checkout runs (its shells, test binaries, linkers).
    return cwd.startswith(WORKTREES)
def scan():
    for d in os.listdir('/proc'):
        if not d.isdigit() or int(d) in protect:
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                st = f.read().rsplit(')', 1)[1].split()
            if st[0] in ('T', 't', 'Z'):
                continue
            cwd = os.readlink(f'/proc/{d}/cwd')
            with open(f'/proc/{d}/cmdline', 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue
        if heavy(cwd, cmd):
            try:
                os.kill(int(d), signal.SIGSTOP); stopped.append(int(d))
            except OSError:
                pass
scan()
print('ready', flush=True)
while not done and os.getppid() == parent:
    time.sleep(0.25)
    if not done:
        scan()
for p in stopped:
    try:
        os.kill(p, signal.SIGCONT)
    except OSError:
        pass
