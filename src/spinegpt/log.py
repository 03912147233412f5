"""What spinegpt says while it works goes through the standard library's ``logging``, in one voice.

Package code logs with ``logging.getLogger(__name__)`` and never prints; the command line calls :func:`setup` once
per process (``-q`` warnings only, ``-v`` debug too). Lines go to stderr, so what a command *outputs* (a plan, JSON,
a table, a path) is alone on stdout and can be piped. Each line names its part of spinegpt and, on a node other
than 0 of a multi-node run, the node, because the consoles of several nodes usually end up in one job log::

    [spinegpt] [2/3 specialise] training from .../01-foundation/final; 1,024 rows
    [spinegpt data] stage1_foundation: reusing .../mixes/stage1_foundation-3f2a (same inputs, same seed)
    [spinegpt node1] [1/3 foundation] starting its ranks

Child processes spinegpt starts (an evaluation, the engine's ranks) log the same way into their output, which the
parent reads; :func:`echo` passes their ``[spinegpt ...]`` lines through unchanged.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "spinegpt"
_PARTS = {"data_mixes": "data", "eval_hooks": "eval", "sweep": "sweep"}


def _tag(name: str) -> str:
    """``spinegpt.data_mixes.build`` -> ``data``; ``spinegpt.train.runner`` -> ``''`` (the run's own voice)."""
    parts = name.split(".")
    return next((_PARTS[p] for p in parts[1:] if p in _PARTS), "")


class _Format(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        node = os.environ.get("NODE_RANK", "0")
        self.node = f"node{node}" if node not in ("", "0") else ""

    def format(self, record: logging.LogRecord) -> str:
        words = " ".join(w for w in (ROOT, _tag(record.name), self.node) if w)
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = f"[{words}] {level}{record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup(verbosity: int = 0) -> None:
    """Configure spinegpt's logger for this process: 0 informs, -1 (``-q``) warns only, 1 (``-v``) debugs. Only
    spinegpt's own loggers are touched; libraries keep their own settings."""
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    logger.propagate = False
    # Child processes spinegpt starts read the same setting (an evaluation's console follows the run's -q / -v).
    os.environ["SPINEGPT_VERBOSITY"] = str(verbosity)


def setup_from_env() -> None:
    """:func:`setup` as the parent process asked (a worker process that spinegpt spawned)."""
    setup(int(os.environ.get("SPINEGPT_VERBOSITY", "0") or 0))


def echo(line: str) -> None:
    """Pass a child process's own ``[spinegpt ...]`` line on to this console as it is: it is formatted already, and
    the child filtered it by the same verbosity."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
