"""An evaluation in a process of its own (``spinegpt eval MODEL --config eval/config.json``), as the runner starts
it after each stage and the sweep after each row: a crash or out-of-memory there cannot take a finished stage
with it, and the model is loaded into a clean process."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spinegpt import proc
from spinegpt.errors import UserError
from spinegpt.eval_hooks.config import EvalJob
from spinegpt.eval_hooks.evaluator import SUMMARY

CONFIG = "config.json"

__all__ = ["CONFIG", "SUMMARY", "EvalFailed", "command", "read_summary", "run"]


class EvalFailed(UserError, RuntimeError):
    """The evaluation process failed or wrote no summary; the message names its log."""


def command(model: str, out_dir: Path, python: str | None = None) -> list[str]:
    return [
        python or sys.executable,
        "-m",
        "spinegpt.cli",
        "eval",
        model,
        "--config",
        str(out_dir / CONFIG),
        "--output-dir",
        str(out_dir),
    ]


def run(
    model: str,
    job: EvalJob,
    out_dir: Path,
    env: dict[str, str],
    log: Path,
    python: str | None = None,
    engine: Callable[..., int] = proc.run,
) -> dict[str, Any]:
    """Evaluate ``model`` as ``job`` says, in its own process; returns the written ``summary.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    job.write(out_dir / CONFIG)
    (out_dir / SUMMARY).unlink(missing_ok=True)
    code = engine(command(model, out_dir, python), env, log)
    if code != 0 or not (out_dir / SUMMARY).is_file():
        raise EvalFailed(f"evaluation of {model} exited with code {code}; log: {log}")
    return read_summary(out_dir)


def read_summary(out_dir: Path) -> dict[str, Any]:
    """The ``summary.json`` of a finished evaluation folder."""
    summary: dict[str, Any] = json.loads((out_dir / SUMMARY).read_text())
    return summary
