"""The regression budget over a run: each stage's evaluation set against the base model's (the run's row 0).

The base model's evaluation is the one the run records as ``baseline`` (``eval.baseline``: the curriculum's
starting model evaluated before stage 1); a benchmark's budget is its ``max_drop``, recorded with its scores.
Figures are compared as plain differences of the headline figures (``eval_hooks/regression.py`` has the rule, and
takes the difference's interval where a paired comparison gives one). Nothing here fails a stage: a stage beyond
its budget is flagged in the run manifest (``eval.regressions``), in the log and in ``spinegpt report``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spinegpt.eval_hooks import registry, regression
from spinegpt.eval_hooks.regression import Check
from spinegpt.train.manifest import RunManifest, StageRecord


def base_benchmarks(run: RunManifest) -> dict[str, Any] | None:
    """The base model's finished evaluation (``summary.json``'s ``benchmarks``), or None where the run has none."""
    base = getattr(run, "baseline", None)  # set where the run evaluated its starting model
    if base is None:
        return None
    record = base if isinstance(base, dict) else base.model_dump()
    if record.get("status") != "done":
        return None
    benchmarks: dict[str, Any] | None = record.get("benchmarks") or None
    return benchmarks


def budgets(benchmarks: Mapping[str, Any]) -> dict[str, float]:
    """``max_drop`` by benchmark name, of the benchmarks an evaluation gave one."""
    return {name: float(e["max_drop"]) for name, e in benchmarks.items() if e.get("max_drop") is not None}


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


def record(run: RunManifest | None, stage: StageRecord) -> list[Check]:
    """After a stage's evaluation: its checks against the run's base model, written into the stage's evaluation
    record (``regressions``); returns the flagged ones."""
    base = base_benchmarks(run) if run is not None else None
    evaluation = stage.eval
    if base is None or evaluation is None or not evaluation.benchmarks:
        return []
    found = checks(base, evaluation.benchmarks)
    if found:
        evaluation.set(regressions=[c.to_json() for c in found])
    return regression.flagged(found)


def report_lines(run: RunManifest) -> list[str]:
    """The ``spinegpt report`` section: every budgeted figure of every evaluated stage against the base model."""
    evaluated = [(s.name, s.eval.benchmarks) for s in run.stages if s.eval is not None and s.eval.benchmarks]
    budgeted = {name: b for _, benchmarks in evaluated for name, b in budgets(benchmarks).items()}
    if not budgeted:
        return []
    lines = ["", "## Regression budget (against the base model)", ""]
    base = base_benchmarks(run)
    if base is None:
        listed = ", ".join(f"{name} {b:g}" for name, b in budgeted.items())
        return [
            *lines,
            f"Budgets are set (max drop in points: {listed}) but the run records no evaluation of its base model "
            "to compare with, so no stage is checked.",
        ]
    lines += [
        "A stage whose headline figure fell more than its benchmark's `max_drop` points below the base model's is "
        "flagged. Flagged is not failed: the stage is trained and kept. Changes are plain differences of the "
        "figures.",
        "",
        "| stage | benchmark | figure | base | stage | change | max drop | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage, benchmarks in evaluated:
        for c in checks(base, benchmarks):
            verdict = "**flagged**" if c.flagged else "within budget"
            lines.append(
                f"| {stage} | {c.benchmark} | {c.metric} | {c.base:.2f} | {c.value:.2f} | {c.difference:+.2f} "
                f"| {c.max_drop:g} | {verdict} |"
            )
    missing = sorted(name for name in budgeted if name not in base)
    if missing:
        lines += ["", f"Not checked (the base model was not evaluated on them): {', '.join(missing)}."]
    return lines
