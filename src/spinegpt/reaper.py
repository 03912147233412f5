"""``python -m spinegpt.reaper PARENT_PID -- COMMAND...``: run COMMAND so that it cannot outlive ``spinegpt``.

torchrun starts every rank in a session of its own, so a kill of the run's process group (kill -9, a preempted
job, a closed terminal) reaches spinegpt and torchrun but not the ranks: they are reparented and keep training and
writing into the run folder. This small process sits between spinegpt and the launcher, in a session of its own
(so a group kill does not take it down with the others), as a child subreaper (so ranks orphaned by torchrun's
death become its children), and with a parent-death signal (so spinegpt's death, however abrupt, reaches it). When
spinegpt dies or asks it to stop, it stops the whole tree below it: SIGTERM, a grace period, then SIGKILL.

Linux only (prctl); elsewhere COMMAND simply runs as spinegpt's child.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 10.0


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def descendants(root: int) -> list[int]:
    """Every process below ``root``, read from /proc (children before grandchildren)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name (field 2) may hold spaces and parentheses: the parent pid follows its last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def stop_tree(grace_s: float = GRACE_S) -> None:
    """SIGTERM everything below this process, wait up to ``grace_s`` for it to go, then SIGKILL what is left."""
    me = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = descendants(me)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while descendants(me) and time.monotonic() < deadline:
            _reap()
            time.sleep(0.2)
        if not descendants(me):
            return


def _reap() -> None:
    """Collect exited children (orphans adopted from torchrun included), so they do not linger as zombies."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[argv.index("--") + 1 :]
    guarded = _prctl(PR_SET_CHILD_SUBREAPER, 1) and _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    if os.getppid() != parent:  # spinegpt died before the death signal was armed
        return 1
    child = subprocess.Popen(command)
    while child.poll() is None and not stopping:
        time.sleep(0.2)
    if stopping or not guarded:
        stop_tree()
    elif descendants(os.getpid()):
        stop_tree()  # the launcher exited and left ranks behind: they must not run on unsupervised
    child.wait()
    _reap()
    return child.returncode if not stopping else 128 + signal.SIGTERM


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
