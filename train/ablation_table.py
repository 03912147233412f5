"""Table 7 rebuilt from evaluations: which data splits each row trained on, its SpineBench close-ended accuracy.

Every figure is computed from the rows' own evaluation files: text and image accuracy as the benchmark scored
them, the average as their item-weighted mean (SPEC §3; never copied from anywhere), each with its 95 % interval
(Wilson for text and image, the within-parts bootstrap for the average). Each row is also compared with the
full-curriculum row on the same items: the difference of averages with its paired bootstrap interval and McNemar's
exact p, so the table says which differences are more than noise; rows made under another evaluation protocol are
marked, not compared. ``compare_paper`` adds the paper's printed figures beside ours, matched by the set of splits a
row trained on, with the paper's average recomputed from its own text and image figures, because two of its printed
averages are not their weighted means (SPEC §4).

Where the sweep also scores further benchmarks (``benchmarks:``, the general medical ones), a second table gives
each row's headline figures on them with their intervals, and a row whose figure fell more than the benchmark's
``max_drop`` points below the base-model row's (the row that trains nothing) is flagged there, with the paired
interval of that difference: flagged, not failed.
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import compare, registry, results, scorecard, spinebench, stats
from spinegpt.eval_hooks.config import StatisticsConfig
from spinegpt.eval_hooks.regression import Check
from spinegpt.eval_hooks.results import ResultError
from spinegpt.train import regression

SPLIT_COLUMNS = (("general", "General"), ("non_spine", "No-Spine"), ("spine", "Spine"))
PAPER_TEXT_ITEMS, PAPER_IMAGE_ITEMS = 294, 193
PAPER: dict[frozenset[str], tuple[float, float, float]] = {
    frozenset(): (75.51, 74.09, 74.95),
    frozenset({"general"}): (64.27, 62.69, 65.31),
    frozenset({"non_spine"}): (82.99, 80.83, 82.14),
    frozenset({"spine"}): (87.76, 86.01, 87.07),
    frozenset({"general", "non_spine"}): (83.67, 77.20, 81.11),
    frozenset({"general", "non_spine", "spine"}): (89.46, 84.46, 87.89),
}
"""Table 7 as printed: (text, image, avg) close-ended accuracy by the splits trained on (SPEC §4)."""


def row_figures(row: dict[str, Any]) -> dict[str, Any]:
    """Text / image accuracy and the count-weighted average of one finished row (``row.json``), and their
    intervals (``<key>_ci``: (low, high), or None where the row's evaluation does not give one)."""
    scores = row["scores"]
    text, image = scores.get("text"), scores.get("image")
    figures: dict[str, Any] = {
        "text": text["accuracy"] if text else None,
        "image": image["accuracy"] if image else None,
        "n_text": text["n"] if text else 0,
        "n_image": image["n"] if image else 0,
    }
    parts = {k: (figures[k], figures[f"n_{k}"]) for k in ("text", "image") if figures[k] is not None}
    figures["avg"] = spinebench.weighted_mean(parts) if parts else None
    statistics = _statistics(row)
    for key, metric in (("text", "text"), ("image", "image"), ("avg", "mcq_average")):
        found = statistics.metric(metric) if statistics else None
        if found is None and key == "avg" and statistics is not None and len(parts) == 1:
            found = statistics.metric(next(iter(parts)))  # one part: the average is that part
        ci = (found.interval.low, found.interval.high) if found else None
        if ci is None and key != "avg" and (part := scores.get(key)) and isinstance(part.get("correct"), int):
            wilson = stats.wilson(part["correct"], part["n"])  # a row written before statistics were recorded
            ci = (wilson.low, wilson.high)
        figures[f"{key}_ci"] = ci
    return figures


def _statistics(row: dict[str, Any]) -> scorecard.Statistics | None:
    """The row's recorded statistics, else those of its result file (rows written before they were recorded)."""
    if (found := scorecard.read(row.get("statistics"))) is not None:
        return found
    path = Path(str(row.get("result_file") or ""))
    if not path.is_file():
        return None
    try:
        result = results.load(path)
        return scorecard.compute(result.item_scores(), StatisticsConfig())
    except ResultError:
        return None


@dataclass(frozen=True)
class AgainstReference:
    """A row's MCQ average against the reference row's, on the same items."""

    difference: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    why_not: str | None = None
    """Why there is no comparison (another protocol, no result file); None where there is one."""


def row_number(rows: Sequence[dict[str, Any]], index: int) -> int:
    """The row's number in the sweep (Table 7's own numbering, kept when a sweep runs only some rows with --only);
    its position where a row does not say."""
    number = rows[index].get("number")
    return number if isinstance(number, int) else index + 1


def reference_row(rows: Sequence[dict[str, Any]]) -> int | None:
    """The index of the full-curriculum row (trained on every split), where the table has one."""
    every = {key for key, _ in SPLIT_COLUMNS}
    return next((i for i, r in enumerate(rows) if set(r["splits"]) == every), None)


def against_reference(row: dict[str, Any], reference: dict[str, Any]) -> AgainstReference:
    """The row's MCQ average minus the reference's (paired bootstrap interval, McNemar's p), both result files read."""
    paths = [Path(str(r.get("result_file") or "")) for r in (reference, row)]
    if not all(p.is_file() for p in paths):
        return AgainstReference(why_not="no result file")
    try:
        comparison = compare.compare_files(*paths)
    except (compare.ComparisonRefused, ResultError) as exc:
        reason = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
        return AgainstReference(why_not=f"not comparable ({_shorten(reason)})")
    metric = comparison.metric("mcq_average") or comparison.metric("text") or comparison.metric("image")
    if metric is None:
        return AgainstReference(why_not="no multiple-choice metric in both")
    d = metric.difference
    return AgainstReference(
        difference=d.estimate,
        low=d.interval.low,
        high=d.interval.high,
        p_value=metric.mcnemar.p_value if metric.mcnemar else None,
    )


def _shorten(text: str, limit: int = 90) -> str:
    text = text.removeprefix("cannot compare ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def paper_figures(splits: Sequence[str]) -> dict[str, float] | None:
    printed = PAPER.get(frozenset(splits))
    if printed is None:
        return None
    text, image, avg = printed
    recomputed = spinebench.mcq_average((text, PAPER_TEXT_ITEMS), (image, PAPER_IMAGE_ITEMS))
    return {"text": text, "image": image, "avg": avg, "avg_recomputed": recomputed}


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ci(value: tuple[float, float] | None) -> str:
    return "" if value is None else f"{value[0]:.2f}–{value[1]:.2f}"


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _comparisons(rows: Sequence[dict[str, Any]]) -> list[AgainstReference | None]:
    """Each row against the full-curriculum row (None for that row itself, or when the table has none)."""
    ref = reference_row(rows)
    if ref is None:
        return [None] * len(rows)
    return [None if i == ref else against_reference(row, rows[ref]) for i, row in enumerate(rows)]


def table_rows(rows: Sequence[dict[str, Any]], compare_paper: bool) -> tuple[list[str], list[list[str]]]:
    """The CSV's cells: every figure and interval bound a column of its own."""
    header = ["row", "curriculum", *(label for _, label in SPLIT_COLUMNS)]
    for key in ("text", "image", "avg"):
        header += [key, f"{key} low", f"{key} high"]
    header += ["n text", "n image", "avg − full", "avg − full low", "avg − full high", "p (McNemar)", "vs full"]
    if compare_paper:
        header += ["paper text", "paper image", "paper avg (printed)", "paper avg (294:193)"]
    body = []
    for i, (row, against) in enumerate(zip(rows, _comparisons(rows), strict=True)):
        figures = row_figures(row)
        splits = set(row["splits"])
        line = [str(row_number(rows, i)), row["name"], *("✓" if key in splits else "" for key, _ in SPLIT_COLUMNS)]
        for key in ("text", "image", "avg"):
            ci = figures[f"{key}_ci"]
            line += [_fmt(figures[key]), _fmt(ci[0] if ci else None), _fmt(ci[1] if ci else None)]
        line += [str(figures["n_text"]), str(figures["n_image"])]
        a = against or AgainstReference()
        line += [_fmt(a.difference), _fmt(a.low), _fmt(a.high), _p(a.p_value), a.why_not or ""]
        if compare_paper:
            paper = paper_figures(row["splits"])
            line += [_fmt(paper[k]) if paper else "" for k in ("text", "image", "avg", "avg_recomputed")]
        body.append(line)
    return header, body


def _markdown_rows(rows: Sequence[dict[str, Any]], compare_paper: bool) -> tuple[list[str], list[list[str]]]:
    """The markdown's cells: a figure with its interval in one cell, the comparison with the full row in two."""
    ref = reference_row(rows)
    header = ["row", "curriculum", *(label for _, label in SPLIT_COLUMNS), "text", "image", "avg", "n text", "n image"]
    if ref is not None:
        header += [f"avg − row {row_number(rows, ref)} [95 % CI]", "p"]
    if compare_paper:
        header += ["paper text", "paper image", "paper avg (printed)", "paper avg (294:193)"]
    body = []
    for i, (row, against) in enumerate(zip(rows, _comparisons(rows), strict=True)):
        figures = row_figures(row)
        splits = set(row["splits"])
        line = [str(row_number(rows, i)), row["name"], *("✓" if key in splits else "" for key, _ in SPLIT_COLUMNS)]
        for key in ("text", "image", "avg"):
            ci = figures[f"{key}_ci"]
            line.append(_fmt(figures[key]) + (f" ({_ci(ci)})" if ci and figures[key] is not None else ""))
        line += [str(figures["n_text"]), str(figures["n_image"])]
        if ref is not None:
            if against is None:
                line += ["reference", ""]
            elif against.why_not:
                line += [against.why_not, ""]
            else:
                assert against.difference is not None and against.low is not None and against.high is not None
                line += [f"{against.difference:+.2f} [{against.low:+.2f}, {against.high:+.2f}]", _p(against.p_value)]
        if compare_paper:
            paper = paper_figures(row["splits"])
            line += [_fmt(paper[k]) if paper else "" for k in ("text", "image", "avg", "avg_recomputed")]
        body.append(line)
    return header, body


def base_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row that trains nothing: the base model every other row is set against."""
    return next((r for r in rows if not r.get("splits") and not r.get("stages")), None)


def _eval_dir(row: dict[str, Any]) -> Path | None:
    """The folder of a row's evaluation (where its result files are), from its Table 7 result file."""
    found = row.get("result_file")
    return Path(str(found)).parent if found else None


def general_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The further benchmarks' headline figures per row (with their 95 % intervals), and the regression budget
    against the base-model row (each flagged difference with its paired interval, where the result files give one)."""
    main = {r.get("benchmark") for r in rows}
    figures: dict[str, None] = {}
    for row in rows:
        for name, entry in (row.get("benchmarks") or {}).items():
            if name not in main:
                for label in registry.get(entry["kind"]).headline(entry.get("scores", {})):
                    figures.setdefault(f"{name}: {label}")
    if not figures:
        return []
    base = base_row(rows)
    base_dir = _eval_dir(base) if base is not None else None
    header = ["row", "curriculum", *figures, "regression budget"]
    lines = ["", "## General medicine", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    budgeted = False
    for i, row in enumerate(rows):
        benchmarks = row.get("benchmarks") or {}
        cells: dict[str, str] = {}
        for name, entry in benchmarks.items():
            found = scorecard.read(entry.get("statistics"))
            by_label = found.by_label() if found else {}
            for label, value in registry.get(entry["kind"]).headline(entry.get("scores", {})).items():
                ci = by_label[label].interval if label in by_label else None
                cells[f"{name}: {label}"] = _fmt(value) + (f" ({ci.low:.2f}–{ci.high:.2f})" if ci else "")
        budgets = regression.budgets(benchmarks)
        budgeted = budgeted or bool(budgets)
        if row is base:
            verdict = "base model"
        elif base is None or not budgets:
            verdict = ""
        else:
            here, reference = _eval_dir(row), base.get("benchmarks") or {}
            intervals = (
                regression.paired_intervals(base_dir, here, [n for n in budgets if n in reference])
                if base_dir is not None and here is not None
                else {}
            )
            flagged = [c for c in regression.checks(reference, benchmarks, intervals) if c.flagged]
            verdict = "; ".join(_flag(c) for c in flagged) or "within budget"
        line = [str(row_number(rows, i)), row["name"], *(cells.get(f, "") for f in figures), verdict]
        lines.append("| " + " | ".join(line) + " |")
    if budgeted:
        lines += [
            "",
            "Figures with their 95 % intervals in brackets. Regression budget: a row whose figure fell more than the "
            "benchmark's `max_drop` points below the base-model row's is flagged, with the difference's 95 % paired "
            "bootstrap interval on the items both evaluated where their result files compare (beyond noise: the "
            "whole interval below `-max_drop`); flagged is not failed."
            + ("" if base else " No row of this sweep trains nothing, so there is no base model to compare with."),
        ]
    return lines


def _flag(check: Check) -> str:
    interval = f" [{check.interval[0]:+.2f}, {check.interval[1]:+.2f}]" if check.interval else ""
    noise = {"beyond": ", beyond noise", "uncertain": ", within noise"}.get(check.certainty, "")
    return (
        f"**flagged** {check.benchmark} {check.metric} {check.difference:+.2f}{interval} "
        f"(max drop {check.max_drop:g}{noise})"
    )


def markdown(rows: Sequence[dict[str, Any]], compare_paper: bool, title: str) -> str:
    header, body = _markdown_rows(rows, compare_paper)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += [
        "",
        "Close-ended SpineBench accuracy (%) with 95 % intervals in brackets (Wilson for text and image; for avg a "
        "percentile bootstrap over items, resampled within text and image). avg = text and image accuracy weighted "
        "by their item counts.",
    ]
    ref = reference_row(rows)
    if ref is not None:
        lines.append(
            f"avg − row {row_number(rows, ref)}: each row's average minus the full curriculum's on the same items, "
            "with its 95 % paired bootstrap interval; p: McNemar's exact test on the items only one of the two got "
            "right. An interval that contains 0 (or a large p) says the two rows are not distinguishable on this "
            "benchmark."
        )
    if compare_paper:
        lines.append(
            "Paper figures from Table 7, matched by the splits trained on; its rows 2 and 6 print averages that are "
            "not the 294:193 weighted means of their own text and image figures, shown recomputed beside them."
        )
    lines += general_lines(rows)
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, Any]], compare_paper: bool) -> str:
    header, body = table_rows(rows, compare_paper)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["1" if c == "✓" else c for c in cells] for cells in body])
    return out.getvalue()


def chart(rows: Sequence[dict[str, Any]], compare_paper: bool, path: Path, title: str) -> None:
    """Grouped bars per row: text, image, avg with their 95 % intervals as error bars (and the paper's avg as an
    outlined bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: list[tuple[str, list[float], list[tuple[float, float]] | None]] = []
    figures = [row_figures(r) for r in rows]
    for key in ("text", "image", "avg"):
        values = [f[key] if f[key] is not None else 0.0 for f in figures]
        # Error bars: the distance from the figure to each bound of its 95 % interval (none where there is none),
        # clipped at 0: a bound recorded with six decimals may lie a hair past its figure (a degenerate interval).
        errors: list[tuple[float, float]] = [
            (max(0.0, v - f[f"{key}_ci"][0]), max(0.0, f[f"{key}_ci"][1] - v))
            if f[f"{key}_ci"] and f[key] is not None
            else (math.nan, math.nan)
            for v, f in zip(values, figures, strict=True)
        ]
        series.append((key, values, errors))
    if compare_paper:
        papers = [paper_figures(r["splits"]) for r in rows]
        series.append(("paper avg (294:193)", [p["avg_recomputed"] if p else 0.0 for p in papers], None))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 4.0))
    for k, (label, values, bars) in enumerate(series):
        positions = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
        paper = label.startswith("paper")
        yerr = [[e[0] for e in bars], [e[1] for e in bars]] if bars else None
        ax.bar(
            positions,
            values,
            width,
            label=label,
            fill=not paper,
            edgecolor="black" if paper else None,
            yerr=yerr,
            capsize=2 if yerr else 0,
            error_kw={"elinewidth": 0.8},
        )
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["name"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("close-ended accuracy (%)")
    ax.set_ylim(0, 100)
    # A sweep's title can be long: wrapped to the figure's width, not clipped at its edges.
    ax.set_title("\n".join(textwrap.wrap(title, int(12 * fig.get_figwidth()))), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: Sequence[dict[str, Any]], folder: Path, stem: str, compare_paper: bool, title: str) -> list[Path]:
    """``stem``.md / .csv / .png in ``folder``; each written under a temporary name, then renamed."""
    paths = [folder / f"{stem}.md", folder / f"{stem}.csv", folder / f"{stem}.png"]
    texts = (markdown(rows, compare_paper, title), csv_text(rows, compare_paper))
    for path, text in zip(paths[:2], texts, strict=True):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    tmp_png = folder / f"{stem}.tmp.png"
    chart(rows, compare_paper, tmp_png, title)
    tmp_png.replace(paths[2])
    return paths
