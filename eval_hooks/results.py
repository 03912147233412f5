"""Reading result files back (``<benchmark>.json`` as ``evaluator.py`` writes them): for comparisons, re-scoring,
reports and tables. A file that is not a result, or is damaged, is a :class:`ResultError` naming it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt.errors import UserError
from spinegpt.eval_hooks import protocol, registry, scorecard
from spinegpt.eval_hooks.benchmark import Benchmark, BenchmarkError, ItemScores, Record
from spinegpt.eval_hooks.evaluator import SUMMARY
from spinegpt.eval_hooks.protocol import EvalProtocol


class ResultError(UserError, ValueError):
    """A result file that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class ResultFile:
    path: Path
    label: str
    """The benchmark's name in its evaluation (``<label>.json``)."""
    kind: str
    model: str
    """The evaluated model as the evaluation named it ("" in files written before it was recorded)."""
    status: str | None
    """``judging`` in a file written before its reports were judged (an interrupted evaluation); else None."""
    records: list[Record]
    protocol: EvalProtocol | None
    """None in files written before protocols were recorded."""
    statistics: scorecard.Statistics | None
    raw: dict[str, Any]
    """The file as read (what re-scoring copies from)."""

    @property
    def benchmark(self) -> Benchmark:
        return registry.get(self.kind)

    def item_scores(self) -> ItemScores:
        try:
            return self.benchmark.item_scores(self.records)
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultError(f"{self.path}: records do not hold what {self.kind} scores ({exc!r})") from None


def load(path: Path) -> ResultFile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{path}: not a JSON result file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list) or "kind" not in data:
        raise ResultError(f"{path}: not an evaluation result (no 'kind' and 'records'; summary.json is not one)")
    records = data["records"]
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict) or "id" not in r or "task" not in r), None)
    if bad is not None:
        raise ResultError(f"{path}: records[{bad}] is not an answered item (needs 'id' and 'task')")
    try:
        registry.get(str(data["kind"]))
        made = protocol.read(data.get("protocol"))
    except (BenchmarkError, ValueError) as exc:
        raise ResultError(f"{path}: {exc}") from None
    return ResultFile(
        path=path,
        label=str(data.get("benchmark") or path.stem),
        kind=str(data["kind"]),
        model=str(data.get("model") or ""),
        status=data.get("status"),
        records=records,
        protocol=made,
        statistics=scorecard.read(data.get("statistics")),
        raw=data,
    )


def in_folder(folder: Path) -> dict[str, Path]:
    """The result files of an evaluation folder by benchmark name: those its ``summary.json`` lists (a folder
    without one, an evaluation that did not finish, offers every ``*.json`` result in it)."""
    summary = folder / SUMMARY
    if summary.is_file():
        try:
            names = list(json.loads(summary.read_text(encoding="utf-8")).get("benchmarks", {}))
        except (ValueError, AttributeError) as exc:
            raise ResultError(f"{summary}: unreadable ({exc})") from None
        found = {name: folder / f"{name}.json" for name in names if (folder / f"{name}.json").is_file()}
    else:
        found = {}
        for file in sorted(folder.glob("*.json")):
            if file.name.startswith(".") or file.name in (SUMMARY, "config.json"):
                continue
            found[file.stem] = file
    if not found:
        raise ResultError(f"{folder}: no evaluation results (no {SUMMARY}, no <benchmark>.json)")
    return found
