"""The one base class of every error a user can cause (a bad config, a bad file, a run that cannot go on).

The command line prints such an error's message and exits with its ``exit_code``; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


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
