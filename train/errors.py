"""The errors a run raises when it cannot start or go on; the command line prints their message, no traceback."""

from __future__ import annotations

from spinegpt.errors import UserError


class RunError(UserError, RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


class StageFailed(RunError):
    """A stage's engine failed or its output did not verify."""
