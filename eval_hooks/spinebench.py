"""SpineBench scoring exactly as the SpineMed-450k paper defines it (§4.2, Table 6, Appendix D).

* Close-ended QA: accuracy (%) on text-only items and on image items separately, and their sample-weighted mean.
* Reports: an LLM judge scores ten dimensions 1-5; a section score is the mean of its dimensions; the report score
  is 20 x the mean of the five section scores (0-100).
* Overall: sum over {text MCQ, image MCQ, report} of w_k * P_k with w_k = n_k / sum(n).

Every number here is computed from item-level results; nothing is copied from the paper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Report dimensions by section, in the paper's order (Appendix D: IR, DGN, PG, EBP, TF, RPM, COV, REL, GRA, EXP).
SECTIONS: dict[str, tuple[str, ...]] = {
    "SIP": ("imaging_report",),
    "AAD": ("diagnosis",),
    "TR": ("patient_guidance", "evidence_based_plan", "technical_feasibility"),
    "RPM": ("risk_prognosis",),
    "RD": ("coverage", "relevance", "granularity", "explanation"),
}
DIMENSIONS: tuple[str, ...] = tuple(d for dims in SECTIONS.values() for d in dims)

# What each dimension judges (paper §4.2 table); the judge's rubric is built from these.
DIMENSION_CRITERIA: dict[str, str] = {
    "imaging_report": "Imaging report: accuracy of findings, clinical significance, quantitative descriptions",
    "diagnosis": "AI-assisted diagnosis: primary diagnosis correctness, differential diagnoses, clinical reasoning",
    "patient_guidance": "Treatment recommendations for the patient: language clarity, empathy, patient reassurance",
    "evidence_based_plan": "Evidence-based plan: rationale, individualization, consistency with guidelines",
    "technical_feasibility": "Technical feasibility: surgical details, complication prevention, backup plans",
    "risk_prognosis": "Risk and prognosis management: perioperative planning, follow-up schedule, safety protocols",
    "coverage": "Reasoning coverage: completeness of evidence identification and explanation",
    "relevance": "Relevance: focus on the core diagnosis without irrelevant content",
    "granularity": "Granularity: precision and sufficiency of quantitative detail",
    "explanation": "Explanation: logical coherence and clarity of the reasoning chain",
}
PART_NAMES = ("text", "image", "report")


@dataclass(frozen=True)
class McqResult:
    correct: int
    total: int
    unparsed: int

    @property
    def accuracy(self) -> float:
        if self.total == 0:
            raise ValueError("accuracy of zero items is undefined")
        return 100.0 * self.correct / self.total


def mcq_result(predictions: Sequence[Sequence[str]], answers: Sequence[Sequence[str]]) -> McqResult:
    """Exact-set accuracy; an empty prediction (unparsed answer) is wrong and counted."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} items")
    correct = sum(bool(p) and sorted(p) == sorted(a) for p, a in zip(predictions, answers, strict=True))
    unparsed = sum(not p for p in predictions)
    return McqResult(correct=correct, total=len(answers), unparsed=unparsed)


def weighted_mean(parts: Mapping[str, tuple[float, int]]) -> float:
    """sum(n_k * score_k) / sum(n_k); every part must have a positive count."""
    if not parts:
        raise ValueError("no parts to average")
    for name, (_, n) in parts.items():
        if n <= 0:
            raise ValueError(f"part {name!r} has {n} items; a weighted mean needs every part to have items")
    total = sum(n for _, n in parts.values())
    return sum(score * n for score, n in parts.values()) / total


def mcq_average(text: tuple[float, int], image: tuple[float, int]) -> float:
    """The close-ended 'Avg.' column: text and image accuracy weighted by their item counts."""
    return weighted_mean({"text": text, "image": image})


def section_scores(dims: Mapping[str, float]) -> dict[str, float]:
    missing = [d for d in DIMENSIONS if d not in dims]
    if missing:
        raise ValueError(f"missing report dimension(s): {', '.join(missing)}")
    for name in DIMENSIONS:
        if not 1 <= dims[name] <= 5:
            raise ValueError(f"dimension {name!r} = {dims[name]} is outside 1-5")
    return {section: sum(dims[d] for d in names) / len(names) for section, names in SECTIONS.items()}


def report_score(dims: Mapping[str, float]) -> float:
    """20 x the mean of the five section means (each the mean of its dimensions): 0-100."""
    sections = section_scores(dims)
    return 20.0 * sum(sections.values()) / len(sections)


def mean_dimensions(judged: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-dimension mean over the judged reports (failed judgments are not in ``judged``)."""
    if not judged:
        raise ValueError("no judged reports")
    return {d: sum(j[d] for j in judged) / len(judged) for d in DIMENSIONS}


def overall_score(parts: Mapping[str, tuple[float, int]]) -> float:
    """Σ n_k·P_k / Σ n_k over exactly {text, image, report}; a missing or empty part is an error, not a zero."""
    missing = [p for p in PART_NAMES if p not in parts]
    extra = [p for p in parts if p not in PART_NAMES]
    if missing or extra:
        raise ValueError(f"overall needs parts {PART_NAMES}; missing {missing}, unexpected {extra}")
    return weighted_mean(parts)
