"""The regression budget over a run: each stage's evaluation set against the base model's (the run's row 0).

The base model's evaluation is the one the run records as ``baseline`` (``eval.baseline``: the curriculum's
starting model evaluated before stage 1); a benchmark's budget is its ``max_drop``, recorded with its scores.
Figures are compared as differences of the headline figures, each with its 95 % paired interval where the two
evaluations' result files can be compared (``eval_hooks/compare.py``: the same items, the same protocol);
``eval_hooks/regression.py`` has the rule. Nothing here fails a stage: a stage beyond its budget is flagged in the
run manifest (``eval.regressions``), in the log and in ``spinegpt report``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import compare, registry, regression, results
from spinegpt.eval_hooks.regression import Check
from spinegpt.train.manifest import RunManifest, StageRecord

logger = logging.getLogger(__name__)

Intervals = dict[str, dict[str, tuple[float, float]]]
"""By benchmark, by headline figure: the 95 % interval of stage minus base."""


def base_benchmarks(run: RunManifest) -> dict[str, Any] | None:
    """The base model's finished evaluation (``summary.json``'s ``benchmarks``), or None where the run has none."""
    base = run.baseline
    if base is None or base.status != "done":
        return None
    return base.benchmarks or None


def budgets(benchmarks: Mapping[str, Any]) -> dict[str, float]:
    """``max_drop`` by benchmark name, of the benchmarks an evaluation gave one."""
    return {name: float(e["max_drop"]) for name, e in benchmarks.items() if e.get("max_drop") is not None}


def paired_intervals(base_dir: Path, stage_dir: Path, names: Iterable[str]) -> Intervals:
    """Per benchmark of ``names``: the paired bootstrap interval of each figure's difference (the stage's result
    file against the base model's, item by item). A benchmark whose files are missing or were not made the same way
    (the comparison is refused) gets none, and its checks rest on the plain difference."""
    found: Intervals = {}
    for name in names:
        try:
            comparison = compare.compare(
                results.load(base_dir / f"{name}.json"), results.load(stage_dir / f"{name}.json")
            )
        except (results.ResultError, compare.ComparisonRefused) as exc:
            logger.info(f"regression budget of {name}: no paired interval ({exc})")
            continue
        found[name] = {m.label: (m.difference.interval.low, m.difference.interval.high) for m in comparison.metrics}
    return found


def checks(
    base: Mapping[str, Any],
    stage: Mapping[str, Any],
    intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> list[Check]:
    """Every budgeted benchmark of ``stage`` (an evaluation's ``benchmarks``) against the same benchmark of
    ``base``: each headline figure both have. ``intervals``: by benchmark, by figure, where known."""
    found: list[Check] = []
    for name, budget in budgets(stage).items():
        entry, reference = stage[name], base.get(name)
        if not reference or reference.get("kind") != entry["kind"]:
            continue  # the base model was not evaluated on this benchmark
        kind = registry.get(entry["kind"])
        found += regression.check(
            name,
            kind.headline(reference.get("scores", {})),
            kind.headline(entry.get("scores", {})),
            budget,
            (intervals or {}).get(name),
        )
    return found


def stage_checks(base_dir: Path, base: Mapping[str, Any], eval_dir: Path, benchmarks: Mapping[str, Any]) -> list[Check]:
    """One evaluation (in ``eval_dir``) against the base model's (in ``base_dir``), with the paired intervals their
    result files give."""
    wanted = [name for name in budgets(benchmarks) if name in base]
    return checks(base, benchmarks, paired_intervals(base_dir, eval_dir, wanted))


def record(run: RunManifest | None, stage: StageRecord) -> list[Check]:
    """After a stage's evaluation: its checks against the run's base model, written into the stage's evaluation
    record (``regressions``); returns the flagged ones."""
    base = base_benchmarks(run) if run is not None else None
    evaluation = stage.eval
    if run is None or run.baseline is None or base is None or evaluation is None or not evaluation.benchmarks:
        return []
    found = stage_checks(Path(run.baseline.dir), base, Path(evaluation.dir), evaluation.benchmarks)
    if found:
        evaluation.set(regressions=[c.to_json() for c in found])
    return regression.flagged(found)


def _verdict(check: Check) -> str:
    if not check.flagged:
        return "within budget"
    if check.certainty == "beyond":
        return "**flagged** (beyond noise)"
    if check.certainty == "uncertain":
        return "**flagged** (interval reaches inside the budget)"
    return "**flagged**"


def report_lines(run: RunManifest) -> list[str]:
    """The ``spinegpt report`` section: every budgeted figure of every evaluated stage against the base model."""
    evaluated = [
        (s.name, Path(s.eval.dir), s.eval.benchmarks) for s in run.stages if s.eval is not None and s.eval.benchmarks
    ]
    budgeted = {name: b for _, _, benchmarks in evaluated for name, b in budgets(benchmarks).items()}
    if not budgeted:
        return []
    lines = ["", "## Regression budget (against the base model)", ""]
    base = base_benchmarks(run)
    if base is None or run.baseline is None:
        listed = ", ".join(f"{name} {b:g}" for name, b in budgeted.items())
        return [
            *lines,
            f"Budgets are set (max drop in points: {listed}) but the run records no evaluation of its base model "
            "to compare with, so no stage is checked.",
        ]
    lines += [
        "A stage whose headline figure fell more than its benchmark's `max_drop` points below the base model's is "
        "flagged. Flagged is not failed: the stage is trained and kept. The change is the stage minus the base "
        "model with its 95 % paired bootstrap interval on the items both evaluated (none where the two results "
        "cannot be compared); a flag is decided by the change itself, and the interval says whether the drop "
        "beyond the budget is beyond noise (the whole interval below `-max_drop`).",
        "",
        "| stage | benchmark | figure | base | stage | change | max drop | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage, eval_dir, benchmarks in evaluated:
        for c in stage_checks(Path(run.baseline.dir), base, eval_dir, benchmarks):
            interval = f" [{c.interval[0]:+.2f}, {c.interval[1]:+.2f}]" if c.interval else ""
            lines.append(
                f"| {stage} | {c.benchmark} | {c.metric} | {c.base:.2f} | {c.value:.2f} | {c.difference:+.2f}"
                f"{interval} | {c.max_drop:g} | {_verdict(c)} |"
            )
    missing = sorted(name for name in budgeted if name not in base)
    if missing:
        lines += ["", f"Not checked (the base model was not evaluated on them): {', '.join(missing)}."]
    return lines
