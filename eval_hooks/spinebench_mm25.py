"""Metrics of the MM'25 SpineBench (Zhang et al.): disease diagnosis and lesion localisation, both multiple choice.

* Diagnosis: accuracy (one correct option of five, "Healthy" always among them).
* Localisation (one or more of L1/L2 ... L5/S1): instance-based exact-match accuracy, precision
  |pred ∩ gold| / |pred| (0 when nothing is predicted) and recall |pred ∩ gold| / |gold|, each averaged over items.
"""

from __future__ import annotations

from collections.abc import Sequence


def diagnosis_accuracy(predictions: Sequence[set[str]], references: Sequence[set[str]]) -> float:
    """Fraction of items whose single predicted option is the correct one (an unparsed answer is wrong)."""
    _same_length(predictions, references)
    if not references:
        raise ValueError("no items")
    return sum(p == r and len(p) == 1 for p, r in zip(predictions, references, strict=True)) / len(references)


def localisation_scores(predictions: list[set[str]], references: list[set[str]]) -> dict[str, float]:
    """Instance-based accuracy, precision and recall as fractions in [0, 1]."""
    _same_length(predictions, references)
    if not references:
        raise ValueError("no items")
    for i, gold in enumerate(references):
        if not gold:
            raise ValueError(f"item {i} has no correct option: recall is undefined")
    n = len(references)
    accuracy = sum(p == g for p, g in zip(predictions, references, strict=True)) / n
    precision = sum(len(p & g) / len(p) if p else 0.0 for p, g in zip(predictions, references, strict=True)) / n
    recall = sum(len(p & g) / len(g) for p, g in zip(predictions, references, strict=True)) / n
    return {"accuracy": accuracy, "precision": precision, "recall": recall}


def _same_length(predictions: Sequence[set[str]], references: Sequence[set[str]]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} items")
