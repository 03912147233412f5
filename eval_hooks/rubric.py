"""The report rubric of SpineBench (SpineMed-450k paper, §4.2 and Appendix D): ten dimensions in five sections, what
each dimension judges, the grading request a judge model gets, and the strict reading of its verdict.

Scoring (``spinebench.py``) and judging (``judge.py``) both take the dimensions from here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from spinegpt.eval_hooks.llm_client import ReplyError

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
RUBRIC_VERSION = 1
SYSTEM_PROMPT = (
    "You are a senior spine surgeon grading an AI-generated clinical report. Grade strictly and consistently. "
    "Reply with one JSON object only, no prose and no code fences."
)


def rubric_prompt(prompt: str, answer: str, reference: str | None = None) -> str:
    """The grading request for one report: task, optional reference, the answer, the ten criteria, the JSON shape."""
    criteria = "\n".join(f'- "{d}": {DIMENSION_CRITERIA[d]}' for d in DIMENSIONS)
    shape = "{" + ", ".join(f'"{d}": <1-5>' for d in DIMENSIONS) + "}"
    parts = [
        "## Task given to the model\n" + prompt.strip(),
        *([f"## Reference report written by spine surgeons\n{reference.strip()}"] if reference else []),
        "## Model's report\n" + (answer.strip() or "(empty)"),
        "## Scoring\nScore each dimension with an integer from 1 (unacceptable) to 5 (expert level):\n" + criteria,
        "Reply with exactly this JSON object and nothing else:\n" + shape,
    ]
    return "\n\n".join(parts)


class JudgeReplyError(ReplyError):
    """The judge's reply is not a complete, valid verdict."""


def parse_verdict(content: str) -> dict[str, int]:
    """Strict: one JSON object with every dimension as an integer 1-5 (fences around it are tolerated)."""
    text = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", content.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        match = re.search(r"\{.*\}", text, re.S)
        if not match:
            raise JudgeReplyError("reply holds no JSON object") from None
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError as exc:
            raise JudgeReplyError(f"malformed JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise JudgeReplyError("reply is JSON but not an object")
    missing = [d for d in DIMENSIONS if d not in data]
    if missing:
        raise JudgeReplyError(f"missing dimension(s): {', '.join(missing)}")
    bad = [d for d in DIMENSIONS if isinstance(data[d], bool) or not isinstance(data[d], int) or not 1 <= data[d] <= 5]
    if bad:
        raise JudgeReplyError(f"not an integer 1-5: {', '.join(f'{d}={data[d]!r}' for d in bad)}")
    return {d: int(data[d]) for d in DIMENSIONS}


@dataclass
class Judgment:
    scores: dict[str, int] | None
    attempts: int
    cached: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.scores is not None

    def to_json(self) -> dict[str, Any]:
        return {"scores": self.scores, "attempts": self.attempts, "cached": self.cached, "errors": self.errors}
