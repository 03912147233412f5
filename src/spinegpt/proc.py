"""Child-process supervision: run one command (a stage's engine, an evaluation), its whole output to a log file,
the lines a caller cares about to the console, and never leave it orphaned.

On Linux the child runs under ``spinegpt.reaper``, which stops the child's whole process tree when this process
dies or asks it to: torchrun starts each rank in a session of its own, so without it a kill of the run's process
group (kill -9, a preemption) would leave the ranks training on, reparented. Ctrl-C, a SIGTERM to this process and
the end of this process all stop the tree. ``stop`` is polled while the child runs; when it returns a reason the
child is terminated (another node failed: without this, torchrun would wait out its rendezvous timeout for ranks
that will never come).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from spinegpt.log import echo

logger = logging.getLogger(__name__)

LineHandler = Callable[[str], None]
StopCheck = Callable[[], str | None]
TAIL_LINES = 20
"""Lines of a failed child's output shown on the console (its whole output is in its log file)."""


def split_lines(stream: IO[bytes]) -> Iterator[str]:
    """Lines of a byte stream, splitting on '\\r' too: tqdm redraws with carriage returns."""
    buffer = b""
    while chunk := stream.read1(65536):  # type: ignore[attr-defined]
        buffer += chunk
        *lines, buffer = re.split(rb"\r\n|\r|\n", buffer)
        for line in lines:
            yield line.decode("utf-8", "replace")
    if buffer:
        yield buffer.decode("utf-8", "replace")


def echo_own_progress(line: str) -> None:
    """Default line handler: pass on the lines our own child processes log (``[spinegpt ...]``)."""
    if line.startswith("[spinegpt"):
        echo(line)


def run(
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    on_line: LineHandler = echo_own_progress,
    cwd: Path | None = None,
    stop: StopCheck | None = None,
) -> int:
    """Run ``command`` to its end; every output line goes to ``log_path`` and to ``on_line``. Returns the exit code;
    on failure its last lines are logged."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with log_path.open("ab") as log:
        log.write(f"\n$ {shlex.join(command)}\n".encode())
        log.flush()
        guarded = [sys.executable, "-m", "spinegpt.reaper", str(os.getpid()), "--", *command]
        # A stop that lands while the child is being started unwinds before there is a handle to stop it with: the
        # reaper then stops it, as it does whenever this process ends (its parent-death signal).
        process = subprocess.Popen(
            guarded if sys.platform == "linux" else command,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=sys.platform == "linux",
        )
        # Ctrl-C and SIGTERM (spinegpt.stopping) raise here, in the read loop: the finally below stops the child
        # (the reaper takes the whole tree below it) before the exception goes on up.
        watcher = _StopWatch(process, stop, log_path) if stop is not None else None
        try:
            assert process.stdout is not None
            for line in split_lines(process.stdout):
                log.write(line.encode() + b"\n")
                tail.append(line)
                on_line(line)
            code = process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)  # the reaper's grace period for the ranks, and some
                except subprocess.TimeoutExpired:
                    process.kill()
            if watcher is not None:
                watcher.close()
    if code != 0:
        lines = "\n".join(f"  | {line}" for line in tail)
        logger.error(f"{Path(command[0]).name} ... exited with code {code}; its last lines ({log_path}):\n{lines}")
    return code


class _StopWatch:
    """Asks ``stop`` every 2 s, in a thread, whether the child must stop, and terminates it when so; :meth:`close`
    ends the watch at once (a plain sleep loop would hold every finished child up to 2 s)."""

    def __init__(self, process: subprocess.Popen[bytes], stop: StopCheck, log_path: Path):
        self.process, self.stop, self.log_path = process, stop, log_path
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="spinegpt-stop-watch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._closed.wait(2.0) and self.process.poll() is None:
            reason = self.stop()
            if reason is None:
                continue
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(f"\n[spinegpt] stopping: {reason}\n")
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            return

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
