"""The one base class of every error a user can cause (a bad config, a bad file, a run that cannot go on).

The command line prints such an error's message and exits with its ``exit_code``; so it does for an OSError the
machine raised (a full disk, a read-only folder: :func:`os_error_message`); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """An error whose message says what is wrong and what to do; printed without a traceback."""

    exit_code = 1


class UsageError(UserError):
    """A command line that asks for something impossible (exit code 2, as argparse's own errors)."""

    exit_code = 2


class Terminated(BaseException):
    """SIGTERM (``kill PID``, a scheduler's stop, ``scancel``), raised where the main thread is, so that it unwinds
    exactly as Ctrl-C does: every ``finally`` and cleanup runs, child processes are stopped, the run is recorded as
    interrupted, and the command exits non-zero. A BaseException, like KeyboardInterrupt: ``except Exception`` (an
    evaluation that failed, a sweep row that failed) must not swallow it and carry on."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended


def os_error_message(exc: OSError) -> str:
    """What the machine refused, in words, with the file it concerns and what to do."""
    target = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device writing {target}: free space there, or write elsewhere"
    if exc.errno == errno.EROFS:
        return f"{target} is on a read-only file system: write elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{target}: permission denied"
    if exc.errno == errno.ENOTDIR:
        return f"{target}: a part of this path is a file, not a folder"
    if exc.errno == errno.EEXIST:
        return f"{target} already exists and is in the way (a file where a folder belongs?)"
    return f"{target}: {exc.strerror or exc}"
