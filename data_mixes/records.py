"""The one record type every reader yields, and its conversion to the engine's training row.

A :class:`Record` keeps what a mix needs to select and account for an item (split, category, task, language,
provenance); :meth:`Record.to_row` drops all of that and keeps what the engine trains on (``messages`` +
``images``, one ``<image>`` tag per image). Readers never raise on a bad item: they yield a :class:`Bad` naming
file and line, and the caller decides (stop with every problem listed, or skip and count by reason).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from spinegpt.data_mixes.rows import IMAGE_TAG

Split = Literal["general", "non_spine", "spine"]
Task = Literal["mcq", "open_qa", "consultation", "report", "reasoning", "vqa"]
SPLITS: tuple[str, ...] = get_args(Split)
TASKS: tuple[str, ...] = get_args(Task)

SPINE_CATEGORY = "Spine Surgery"
CATEGORIES = (
    SPINE_CATEGORY,
    "Foot and Ankle Surgery",
    "Orthopedic Trauma",
    "Hand and Upper Extremity Surgery",
    "Joint Reconstruction",
    "Sports Medicine",
    "Pediatric Orthopedics",
)
"""The seven orthopedic classes of SpineMed-450k. The paper names the first four; the other three are the usual
remaining orthopedic subspecialties and are ours (the schema accepts only these seven, so a typo cannot silently
move an item from one split to another)."""

SUBSPECIALTIES = (
    "Tumor and Osteomyelitis",
    "Complications",
    "Dysplastic and Congenital Deformities",
    "Idiopathic Scoliosis",
    "The Thoracic and Lumbar Degenerative Spine",
    "General Considerations",
    "Kyphosis and Postlaminectomy Deformities",
    "Anatomic Approaches",
    "Adult Spinal Deformity",
    "Spondylolisthesis",
    "Trauma",
    "Neuromuscular Spine Deformity",
    "Biomechanics",
    "The Cervical Degenerative Spine",
)


@dataclass
class Record:
    id: str
    source: str
    """The reader's source name (``medical_o1``, ``pubmedvision``, ``spinemed``, ...)."""
    split: Split
    task: Task
    language: str
    messages: list[dict[str, str]]
    images: list[str] = field(default_factory=list)
    """Absolute image paths, in ``<image>`` tag order."""
    category: str | None = None
    subspecialty: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    """Dataset id or DOI, book, case id, and always the source file and line."""
    index: int = -1
    """The item's position in its source file (``readers.iter_items``): what a build samples and spools by."""

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"messages": self.messages}
        if self.images:
            row["images"] = self.images
        return row

    def question(self) -> str:
        """The first user turn, normalised: what benchmark decontamination compares."""
        first = next((m["content"] for m in self.messages if m["role"] == "user"), "")
        return normalise_question(first)


@dataclass(frozen=True)
class Bad:
    """An item a reader could not turn into a record."""

    where: str
    """``file:line`` (or ``file[index]`` for a JSON array without line information)."""
    reason: str
    """Short, stable reason (counted by the build manifest when a mix skips bad items)."""
    detail: str = ""
    skip: bool = False
    """Not an error: an item the source itself leaves unusable (a medical-o1 row with no chain of thought). It is
    skipped and counted whatever the mix's ``on_error`` says."""

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}{': ' + self.detail if self.detail else ''}"


_OPTIONS_BLOCK = re.compile(r"\n\s*(?:options?|choices?)\s*[:：].*$", re.I | re.S)
_OPTION_LINE = re.compile(r"^\s*\(?[A-H][\.\)）:：]\s.*$", re.M)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise_question(text: str) -> str:
    """Case, width, whitespace, punctuation, ``<image>`` tags and option lines (``A. ...``) removed.

    Two phrasings of one benchmark question that differ only in these still match, so a training copy of a test
    item cannot slip through on formatting.
    """
    text = unicodedata.normalize("NFKC", text).replace(IMAGE_TAG, " ")
    text = _OPTION_LINE.sub("", _OPTIONS_BLOCK.sub("", text))
    return _NON_WORD.sub(" ", text.lower()).strip()


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> str:
    """``zh`` when there is at least one CJK character per four Latin letters (a Chinese character carries about
    a word; Chinese clinical text is full of English terms), else ``en``: the corpus is bilingual."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    return "zh" if cjk and cjk * 4 >= latin else "en"


def split_for(category: str | None) -> Split:
    """SpineMed items: Spine Surgery is ``spine``, the other six classes ``non_spine``."""
    return "spine" if category == SPINE_CATEGORY else "non_spine"


def render_reasoning(thinking: str, answer: str, style: str) -> str:
    """The assistant turn of a reasoning item: its chain of thought kept, laid out as ``style`` says."""
    thinking, answer = thinking.strip(), answer.strip()
    if style == "answer_only" or not thinking:
        return answer
    if style == "think_tags":
        return f"<think>\n{thinking}\n</think>\n\n{answer}"
    if style == "thinking_sections":  # the HuatuoGPT-o1 authors' layout
        return f"## Thinking\n\n{thinking}\n\n## Final Response\n\n{answer}"
    raise ValueError(f"unknown reasoning style {style!r}; use thinking_sections, think_tags or answer_only")


REASONING_STYLES = ("thinking_sections", "think_tags", "answer_only")
