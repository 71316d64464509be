#!/usr/bin/env python3
"""Runs a command and records the peak resident memory of its process tree.

    peak_mem.py [--match NAME] [--interval S] -- CMD ARGS...

Every INTERVAL seconds (default 0.1) it sums VmRSS (/proc/<pid>/status) over
the command's process and all its descendants (found through the parent
pids in /proc/*/stat, looked up again at every sample, since a child such
as PyFlink's gateway JVM starts later), with --match only over those whose
command name (/proc/<pid>/comm) contains NAME, and keeps the maximum. A
sampled peak: a spike shorter than the interval can be missed.

The command's stderr is passed through; its stdout line by line, except the
lines starting with `engine=` (run_flink.sh's RUNNER protocol): the last of
them is held back and printed when the command has ended, with
` peak_tree_rss_mb=<MB>` appended. The exit code is the command's (128 + N
when signal N ended it).

The command runs in its own process group; SIGTERM, SIGINT and SIGHUP are
forwarded to that group (so run_flink.sh's timeout still stops the JVM), and
the command is killed (SIGKILL) if this process dies first.

Example (run_flink.sh RUNNER for Flink, bench/nexmark.sh):
    peak_mem.py --match java -- python flink_nexmark.py --data D --query q5 --par 2
"""

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading


def parent_pids():
    """pid -> parent pid of every process now in /proc."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                # The command name (field 2) may hold spaces and ')'.
                out[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass  # the process has just ended
    return out


def tree(root):
    """root and all its descendants."""
    children = {}
    for pid, ppid in parent_pids().items():
        children.setdefault(ppid, []).append(pid)
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def rss_kb(pid, match):
    """VmRSS of pid in kB; 0 when it has ended, has no memory (a zombie) or
    its command name does not contain match."""
    try:
        if match:
            with open(f"/proc/{pid}/comm") as f:
                if match not in f.read():
                    return 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def kill_with_parent():
    """In the child before exec: its own process group, and SIGKILL when
    this process dies (PR_SET_PDEATHSIG; best effort)."""
    os.setpgid(0, 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--match", default="", help="count only processes whose name contains this")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command")

    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=kill_with_parent)

    def forward(signum, _frame):
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)

    peak = [0]  # kB
    done = threading.Event()

    def sample():
        while True:
            peak[0] = max(peak[0], sum(rss_kb(p, args.match) for p in tree(child.pid)))
            if done.wait(args.interval):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    engine_line = None
    for line in child.stdout:  # EOF when every process holding the pipe has ended
        if line.startswith("engine="):
            engine_line = line.rstrip("\n")
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
    rc = child.wait()
    done.set()
    sampler.join()

    mb = round(peak[0] / 1024)
    if engine_line is not None:
        print(f"{engine_line} peak_tree_rss_mb={mb}", flush=True)
    else:
        print(f"[peak_mem] no engine= line; peak_tree_rss_mb={mb}", file=sys.stderr)
    sys.exit(rc if rc >= 0 else 128 - rc)


if __name__ == "__main__":
    main()
