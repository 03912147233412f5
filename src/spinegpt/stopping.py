"""How spinegpt stops when told to: SIGTERM means what Ctrl-C means, everywhere.

The command line calls :func:`on_sigterm_raise` once; from then on a SIGTERM raises
:class:`~spinegpt.errors.Terminated` in the main thread. Whatever the process was doing unwinds through the same
cleanup a KeyboardInterrupt runs (child processes are stopped by ``proc.run``, temporaries removed, records marked
``interrupted``), and worker pools started with :func:`process_pool` take their workers down with them. A second
SIGTERM during that cleanup is only logged: the cleanup finishes, and a process that must die at once gets SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from types import FrameType

from spinegpt import log
from spinegpt.errors import Terminated

logger = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def on_sigterm_raise() -> None:
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            logger.warning("SIGTERM again: still cleaning up (SIGKILL stops at once)")
            return
        stopping = True
        raise Terminated("stopped by SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def die_with_parent() -> None:
    """In a worker: be sent SIGTERM when the process that started it dies, however abruptly (kill -9 included), so
    no worker goes on reading a source for a build nobody waits for (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pool's own shutdown is all there is
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _worker_start(then: Callable[[], None] | None) -> None:
    die_with_parent()
    log.setup_from_env()
    if then is not None:
        then()


@contextmanager
def process_pool(workers: int, initializer: Callable[[], None] | None = None) -> Iterator[ProcessPoolExecutor]:
    """A pool of spawned worker processes (spawn, not fork: the caller may hold threads, and a forked copy of a lock
    can deadlock) that leaves none behind: when the caller stops (an error, Ctrl-C, SIGTERM) the workers are
    terminated instead of being waited for, and they die with the caller if it is killed."""
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start, initargs=(initializer,)
    )
    try:
        yield pool
    except BaseException:
        # ProcessPoolExecutor has no terminate(): its worker processes are only reachable through _processes.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(10)
        raise
    pool.shutdown(wait=True)
