"""``spinegpt report RUN``: a whole curriculum run at a glance, finished or not.

Reads the run manifest, the engine's per-step logs of every stage and the stage evaluations, and writes into
``RUN/report/`` (or ``--output``):

* ``report.md``: the run, each stage (start model, data, steps, final loss, wall time, weights), evaluation scores
  with their 95 % intervals (the base model as row 0 where ``eval.baseline`` evaluated it), each stage against the
  previous one and against the base model (paired differences, McNemar), the regression budget (each budgeted
  figure against the base model, flagged beyond ``max_drop``), live progress of a running stage, and a list of
  what is missing (stages not started, interrupted, unevaluated);
* ``loss_lr.png``: loss and learning rate of all stages on one step axis, stage boundaries marked;
* ``eval.png``: evaluation scores per stage with their intervals as error bars (when any stage was evaluated).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import compare, registry, results, scorecard
from spinegpt.eval_hooks.evaluator import answers_line
from spinegpt.train import manifest, regression, swift_adapter
from spinegpt.train.hooks.progress import read_progress
from spinegpt.train.manifest import RunManifest, StageRecord
from spinegpt.train.swift_adapter import StepRecord

REPORT_DIR = "report"
BASE_ROW = "base model"


def _steps(stage_dir: Path) -> list[StepRecord]:
    return swift_adapter.read_steps(stage_dir / "engine")


def _duration(stage: StageRecord) -> float | None:
    if stage.started_at and stage.ended_at:
        start = dt.datetime.fromisoformat(stage.started_at)
        return (dt.datetime.fromisoformat(stage.ended_at) - start).total_seconds()
    return stage.engine_seconds


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@dataclass(frozen=True)
class EvalRow:
    """One evaluated model of the run: the base model (row 0) or a stage's final weights."""

    name: str
    dir: Path
    benchmarks: dict[str, Any]
    """Its ``summary.json`` entries by benchmark name."""


def eval_rows(data: RunManifest) -> list[EvalRow]:
    rows = []
    base = data.baseline
    if base is not None and base.status == "done" and base.benchmarks:
        rows.append(EvalRow(BASE_ROW, Path(base.dir), base.benchmarks))
    for stage in data.stages:
        if stage.eval is not None and stage.eval.benchmarks:
            rows.append(EvalRow(stage.name, Path(stage.eval.dir), stage.eval.benchmarks))
    return rows


Figure = tuple[float, tuple[float, float] | None]
"""A headline figure and its 95 % interval (None where its evaluation recorded none)."""


def _eval_metrics(benchmarks: dict[str, Any]) -> dict[str, Figure]:
    """Flat 'benchmark: metric' -> (value, interval) of an evaluation (each benchmark's headline figures)."""
    out: dict[str, Figure] = {}
    for bench, result in benchmarks.items():
        headline = registry.get(result["kind"]).headline(result.get("scores", {}))
        found = scorecard.read(result.get("statistics"))
        by_label = found.by_label() if found else {}
        for label, value in headline.items():
            metric = by_label.get(label)
            out[f"{bench}: {label}"] = (value, (metric.interval.low, metric.interval.high) if metric else None)
    return out


def _figure(figure: Figure | None) -> str:
    if figure is None:
        return "-"
    value, ci = figure
    return f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def comparison_lines(rows: list[EvalRow]) -> list[str]:
    """Per benchmark: each stage against the evaluation before it, and against the base model, on the same items."""
    loaded: dict[Path, results.ResultFile | str] = {}

    def result(row: EvalRow, bench: str) -> results.ResultFile | str:
        path = row.dir / f"{bench}.json"
        if path not in loaded:
            try:
                loaded[path] = results.load(path)
            except results.ResultError as exc:
                loaded[path] = str(exc)
        return loaded[path]

    lines: list[str] = []
    benches = list(dict.fromkeys(b for row in rows for b in row.benchmarks))
    for bench in benches:
        chain = [row for row in rows if bench in row.benchmarks]
        pairs = []
        for i, row in enumerate(chain[1:], 1):
            pairs.append((chain[i - 1], row))
            if chain[0].name == BASE_ROW and i > 1:
                pairs.append((chain[0], row))
        if not pairs:
            continue
        cells: list[tuple[str, str, dict[str, str] | str]] = []
        labels: dict[str, None] = {}
        for reference, row in pairs:
            a, b = result(reference, bench), result(row, bench)
            if isinstance(a, str) or isinstance(b, str):
                cells.append((row.name, reference.name, f"no result to compare ({a if isinstance(a, str) else b})"))
                continue
            reason = compare.refusal(a, b)
            if reason is not None:
                cells.append((row.name, reference.name, f"not comparable: {reason}"))
                continue
            comparison = compare.compare(a, b)
            deltas = {}
            for m in comparison.metrics:
                labels.setdefault(m.label)
                deltas[m.label] = m.delta_text() + (f", p {m.mcnemar.p_value:.3g}" if m.mcnemar else "")
            cells.append((row.name, reference.name, deltas))
        columns = list(labels) or ["comparison"]
        lines += ["", f"#### {bench}", "", "| stage | against | " + " | ".join(columns) + " |"]
        lines.append("|---|---|" + "---|" * len(columns))
        for name, against, cell in cells:
            if isinstance(cell, str):
                lines.append(f"| {name} | {against} | {cell} |" + " |" * max(0, len(columns) - 1))
            else:
                lines.append(f"| {name} | {against} | " + " | ".join(cell.get(c, "-") for c in columns) + " |")
    if lines:
        lines = [
            "",
            "### Changes (stage minus the evaluation it is set against)",
            "",
            "Differences in points with their 95 % paired bootstrap interval on the items both evaluated; p: McNemar's "
            "exact test (multiple choice). An interval that contains 0 is a change this benchmark cannot tell from "
            "noise. Evaluations made under different protocols are not compared (the differing setting is named).",
            *lines,
        ]
    return lines


def plot_loss_lr(stages: list[StageRecord], steps: list[list[StepRecord]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(steps):
        return False
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    offset = 0
    for stage, records in zip(stages, steps, strict=True):
        max_steps = stage.global_step or (records[-1].max_steps if records else 0)
        if records:
            xs = [offset + r.step for r in records]
            ax_loss.plot(xs, [r.loss for r in records], marker=".", label=stage.name)
            ax_lr.plot(xs, [r.learning_rate or 0.0 for r in records], marker=".")
        for ax in (ax_loss, ax_lr):
            ax.axvline(offset + 0.5, color="grey", linestyle="--", linewidth=0.8)
        ax_loss.annotate(  # inside the axes, beside its boundary: a label drawn across the edge gets clipped
            stage.name,
            (offset + 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            fontsize=8,
            va="top",
            ha="left",
            color="grey",
        )
        offset += max_steps or 0
    ax_loss.margins(y=0.15)  # room for the stage labels above the curves
    ax_loss.set_ylabel("training loss")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step (all stages)")
    ax_loss.legend(fontsize=8)
    ax_loss.set_title("Loss and learning rate across the curriculum")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_eval(rows: list[EvalRow], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_stage = [(row.name, _eval_metrics(row.benchmarks)) for row in rows]
    per_stage = [(name, m) for name, m in per_stage if m]
    if not per_stage:
        return False
    metrics = sorted({k for _, m in per_stage for k in m})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(metrics) * len(per_stage) / 2), 4.5))
    width = 0.8 / len(per_stage)
    for i, (name, values) in enumerate(per_stage):
        xs = [j + i * width for j in range(len(metrics))]
        heights = [values[m][0] if m in values else 0.0 for m in metrics]
        # Error bars reach the bounds of each figure's 95 % interval (none where it has none).
        bounds = [values[m][1] if m in values else None for m in metrics]
        # Clipped at 0: a bound recorded with six decimals may lie a hair past its figure (a degenerate interval).
        below = [max(0.0, h - b[0]) if b else math.nan for h, b in zip(heights, bounds, strict=True)]
        above = [max(0.0, b[1] - h) if b else math.nan for h, b in zip(heights, bounds, strict=True)]
        ax.bar(xs, heights, width=width, label=name, yerr=[below, above], capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))])
    ax.set_xticklabels(metrics, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("score")
    ax.set_title("Evaluation after each stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write the report of ``run_dir``; returns the markdown file."""
    manifest_path = run_dir / manifest.FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {manifest.FILE}: not a spinegpt run folder (or not started)")
    data = RunManifest.read(manifest_path)
    out_dir = out_dir or run_dir / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    stages = data.stages
    steps = [_steps(Path(s.dir)) for s in stages]
    progress = read_progress(run_dir)
    has_loss_plot = plot_loss_lr(stages, steps, out_dir / "loss_lr.png")
    evaluated = eval_rows(data)
    has_eval_plot = plot_eval(evaluated, out_dir / "eval.png")

    attempt = data.attempts[-1] if data.attempts else None
    git = (attempt.git if attempt else None) or {}
    packages = attempt.packages if attempt else {}
    lines = [
        f"# Run report: {data.name}",
        "",
        f"- run folder: `{run_dir}`  ",
        f"- run id: `{data.run_id}`, status: **{data.status}**, "
        f"{len(data.attempts)} attempt(s), {data.world_size} process(es)  ",
        f"- curriculum: `{data.curriculum_file}`"
        + (f" with overrides `{' '.join(data.overrides)}`" if data.overrides else "")
        + "  ",
        f"- base model: `{data.curriculum.get('model')}`  ",
        f"- code: `{git.get('commit', 'unknown')}`{' (dirty)' if git.get('dirty') else ''}; "
        + ", ".join(
            f"{k} {v}" for k, v in packages.items() if v and k in ("ms-swift", "transformers", "deepspeed", "torch")
        ),
        "",
        "## Stages",
        "",
        "| # | stage | status | starts from | data | steps | final loss | wall time | weights |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    missing: list[str] = []
    for stage, records in zip(stages, steps, strict=True):
        data_info = stage.data or {}
        inputs = ", ".join(f"{i['source']} `{i['sha256'][:10]}`" for i in data_info.get("inputs", [])) or "-"
        last = records[-1] if records else None
        done_steps = f"{last.step}/{last.max_steps}" if last else "-"
        loss = f"{last.loss:.4f}" if last else "-"
        weights = f"`{stage.weights_sha256[:12]}`" if stage.weights_sha256 else "-"
        rows = f" ({data_info['rows']} rows)" if data_info.get("rows") else ""
        lengths = data_info.get("lengths") or {}
        if lengths.get("dropped"):
            # Rows removed by the over-length policy are data the stage did not train on: say so where it shows.
            rows = rows.replace(
                " rows)", f" rows; {lengths['dropped']} dropped over max_length {lengths['max_length']})"
            )
        lines.append(
            f"| {stage.index + 1} | {stage.name} | {stage.status} | {stage.starts_from} | "
            f"{inputs}{rows} | {done_steps} | {loss} | {_fmt_seconds(_duration(stage))} | {weights} |"
        )
        if stage.status == "pending":
            missing.append(f"stage {stage.name!r} has not started")
        elif stage.status in ("running", "failed"):
            where = f" at step {done_steps}" if last else " before its first logged step"
            why = f" ({stage.error})" if stage.error else ""
            missing.append(
                f"stage {stage.name!r} did not finish{where}{why}; continue with `spinegpt run "
                f"{data.curriculum_file} --output-dir {run_dir} --resume`"
            )
        if stage.status != "pending" and not records:
            missing.append(f"stage {stage.name!r} has no engine log (`engine/{swift_adapter.LOG_FILE}`)")
        evaluation = stage.eval
        if evaluation and evaluation.status == "failed":
            missing.append(f"the evaluation of stage {stage.name!r} failed: {evaluation.error}")
        elif evaluation and evaluation.status == "running":
            missing.append(f"the evaluation of stage {stage.name!r} did not finish")

    if data.baseline is not None and data.baseline.status == "failed":
        missing.append(f"the base model's evaluation failed: {data.baseline.error}")
    elif data.baseline is not None and data.baseline.status == "running":
        missing.append("the base model's evaluation did not finish")
    figures = [(row.name, _eval_metrics(row.benchmarks)) for row in evaluated]
    figures = [(n, m) for n, m in figures if m]
    if figures:
        metrics = sorted({k for _, m in figures for k in m})
        lines += [
            "",
            "## Evaluation",
            "",
            "Figures with their 95 % intervals in brackets"
            + (" (row 0: the base model, before any stage)" if evaluated[0].name == BASE_ROW else "")
            + ".",
            "",
            "| stage | " + " | ".join(metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for name, values in figures:
            lines.append(f"| {name} | " + " | ".join(_figure(values.get(m)) for m in metrics) + " |")
        lines.append("")
        for row in evaluated:
            for bench, result in row.benchmarks.items():
                if result.get("answers"):
                    lines.append(f"- {row.name}, {bench}: {answers_line(result['answers'])}")
        lines += comparison_lines(evaluated)
    lines += regression.report_lines(data)
    if progress and data.status == "running":
        remaining = progress.get("remaining_s")
        lines += [
            "",
            "## Live progress",
            "",
            f"stage {progress.get('stage')} ({(progress.get('stage_index') or 0) + 1}/{progress.get('n_stages')})"
            f": step {progress.get('step')}/{progress.get('max_steps')}, loss {progress.get('loss')}, about "
            f"{_fmt_seconds(remaining)} left in the stage (as of {progress.get('updated_at')})",
        ]
    lines += ["", "## Plots", ""]
    lines.append("![loss and learning rate](loss_lr.png)" if has_loss_plot else "No training step was logged yet.")
    if has_eval_plot:
        lines.append("\n![evaluation](eval.png)")
    lines += ["", "## Missing", ""]
    lines += [f"- {m}" for m in missing] or ["Nothing: every stage finished and every configured evaluation ran."]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
