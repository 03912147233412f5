"""Table 7 rebuilt from evaluations: which data splits each row trained on, its SpineBench close-ended accuracy.

Every figure is computed from the rows' own evaluation files: text and image accuracy as the benchmark scored
them, the average as their item-weighted mean (SPEC §3; never copied from anywhere). ``compare_paper`` adds the
paper's printed figures beside ours, matched by the set of splits a row trained on, with the paper's average
recomputed from its own text and image figures, because two of its printed averages are not their weighted means
(SPEC §4).

Where the sweep also scores further benchmarks (``benchmarks:``, the general medical ones), a second table gives
each row's headline figures on them, and a row whose figure fell more than the benchmark's ``max_drop`` points below
the base-model row's (the row that trains nothing) is flagged there: flagged, not failed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks import registry, spinebench
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
    """Text / image accuracy and the count-weighted average of one finished row (``row.json``)."""
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
    return figures


def paper_figures(splits: Sequence[str]) -> dict[str, float] | None:
    printed = PAPER.get(frozenset(splits))
    if printed is None:
        return None
    text, image, avg = printed
    recomputed = spinebench.mcq_average((text, PAPER_TEXT_ITEMS), (image, PAPER_IMAGE_ITEMS))
    return {"text": text, "image": image, "avg": avg, "avg_recomputed": recomputed}


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table_rows(rows: Sequence[dict[str, Any]], compare_paper: bool) -> tuple[list[str], list[list[str]]]:
    header = ["row", "curriculum", *(label for _, label in SPLIT_COLUMNS), "text", "image", "avg", "n text", "n image"]
    if compare_paper:
        header += ["paper text", "paper image", "paper avg (printed)", "paper avg (294:193)"]
    body = []
    for number, row in enumerate(rows, 1):
        figures = row_figures(row)
        splits = set(row["splits"])
        line = [str(number), row["name"], *("✓" if key in splits else "" for key, _ in SPLIT_COLUMNS)]
        line += [_fmt(figures["text"]), _fmt(figures["image"]), _fmt(figures["avg"])]
        line += [str(figures["n_text"]), str(figures["n_image"])]
        if compare_paper:
            paper = paper_figures(row["splits"])
            line += [_fmt(paper[k]) if paper else "" for k in ("text", "image", "avg", "avg_recomputed")]
        body.append(line)
    return header, body


def base_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row that trains nothing: the base model every other row is set against."""
    return next((r for r in rows if not r.get("splits") and not r.get("stages")), None)


def general_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The further benchmarks' headline figures per row, and the regression budget against the base-model row."""
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
    header = ["row", "curriculum", *figures, "regression budget"]
    lines = ["", "## General medicine", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    budgeted = False
    for number, row in enumerate(rows, 1):
        benchmarks = row.get("benchmarks") or {}
        values: dict[str, float] = {}
        for name, entry in benchmarks.items():
            for label, value in registry.get(entry["kind"]).headline(entry.get("scores", {})).items():
                values[f"{name}: {label}"] = value
        budgeted = budgeted or bool(regression.budgets(benchmarks))
        if row is base:
            verdict = "base model"
        elif base is None or not regression.budgets(benchmarks):
            verdict = ""
        else:
            flagged = [c for c in regression.checks(base.get("benchmarks") or {}, benchmarks) if c.flagged]
            verdict = (
                "; ".join(
                    f"**flagged** {c.benchmark} {c.metric} {c.difference:+.2f} (max drop {c.max_drop:g})"
                    for c in flagged
                )
                or "within budget"
            )
        cells = [_fmt(values.get(f)) for f in figures]
        lines.append("| " + " | ".join([str(number), row["name"], *cells, verdict]) + " |")
    if budgeted:
        lines += [
            "",
            "Regression budget: a row whose figure fell more than the benchmark's `max_drop` points below the "
            "base-model row's is flagged (plain differences of the figures); flagged is not failed."
            + ("" if base else " No row of this sweep trains nothing, so there is no base model to compare with."),
        ]
    return lines


def markdown(rows: Sequence[dict[str, Any]], compare_paper: bool, title: str) -> str:
    header, body = table_rows(rows, compare_paper)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += [
        "",
        "Close-ended SpineBench accuracy (%). avg = text and image accuracy weighted by their item counts.",
    ]
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
    """Grouped bars per row: text, image, avg (and the paper's avg as an outlined bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: list[tuple[str, list[float]]] = []
    figures = [row_figures(r) for r in rows]
    for key in ("text", "image", "avg"):
        series.append((key, [f[key] if f[key] is not None else 0.0 for f in figures]))
    if compare_paper:
        papers = [paper_figures(r["splits"]) for r in rows]
        series.append(("paper avg (294:193)", [p["avg_recomputed"] if p else 0.0 for p in papers]))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 4.0))
    for k, (label, values) in enumerate(series):
        positions = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
        paper = label.startswith("paper")
        ax.bar(positions, values, width, label=label, fill=not paper, edgecolor="black" if paper else None)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["name"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("close-ended accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
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
