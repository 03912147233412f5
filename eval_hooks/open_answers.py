"""How a free-text answer to a VQA question is read and compared with the published one (VQA-RAD, PathVQA, SLAKE).

**Reading.** Only the decisive part of a reply counts (:func:`answers.decisive_part`: answer tags, ``\\boxed{}``,
the text after a final-answer heading or the last answer cue, else the whole reply; ``<think>`` removed), and of
that its first sentence, the *answer span*: "The answer is T2-weighted MRI. It shows ..." answers
"T2-weighted MRI".

**Closed yes/no questions** (the published answer is yes or no; in Chinese 是/否 and the synonyms SLAKE uses:
是的/不是/包含/不包含/有/没有): the reply's verdict is the yes or no word the span starts with, else the one polarity
the span (or, failing that, the decisive part) contains; a reply with both polarities or neither has no verdict:
scored wrong and counted as unparsed. **Closed questions answered by a word** (SLAKE's "Heart", "Coronal Plane")
and **open questions** are compared as text: *exact match* of the normalised span with the normalised answer, and,
for open questions, *token recall*, the share of the answer's tokens found in the decisive part (each counted at most
as often as the answer has it). Exact match and recall are reported apart.

**Normalisation** is the VQA one LLaVA-Med uses (``normalize_word``): Unicode NFKC, lower case, punctuation and
symbols to spaces (a decimal point and a thousands comma inside a number kept as numbers), number words zero-ten to
digits ("none" to 0), articles dropped, spaces collapsed. Chinese has no spaces, so for recall each CJK character is
one token (Latin words and numbers stay whole).

**Where the harnesses disagree, and what this module does:**

* Closed yes/no. LLaVA-Med (``llava/eval/run_eval.py``) counts an item right when the answer *substring* is in the
  reply and leaves an item out of the denominator when the reply holds "yes" or "no" but not the answer (a bug: the
  denominator shrinks with wrong answers). MedEvalKit (``utils/utils.py: judge_judgement``) requires exactly one of
  the substrings "yes"/"no", so "normal" counts as "no" and "Yes, no fracture" is wrong. Here: whole words (and the
  Chinese synonyms), the opening verdict first, every item in the denominator, a reply without verdict unparsed.
* Open exact match. LLaVA-Med's "exact match" is really the share of the reply's words found in the answer (a
  precision); MedEvalKit's is string equality of the lower-cased reply without any normalisation ("Liver." is not
  "liver"). Here: equality after the normalisation above, of the answer span, as MedEvalKit intends.
* Open recall. LLaVA-Med counts a reply word as often as the *reply* has it, so recall can exceed the share of the
  answer recalled; MedEvalKit uses word sets without normalisation. Here: clipped counts after normalisation (the
  standard token recall), over the decisive part, as MedEvalKit reads the reply after its answer cues.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from spinegpt.eval_hooks.answers import decisive_part

Polarity = Literal["yes", "no"]

_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_CJK = "\u3400-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A sentence ends at . ! ? followed by a space or the end (so a decimal point is no end), a Chinese full stop, or a
# line break.
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[。！？；;\n]")

# SLAKE's Chinese yes/no answers. Longer phrases first, and the negatives are looked for before the positives they
# contain (不是 holds 是, 没有 holds 有, 不包含 holds 包含).
YES_ZH = ("是的", "包含", "是", "有")
NO_ZH = ("不包含", "不是", "没有", "否")
# One-character replies that are verdicts only on their own: inside a sentence 无 starts 无法 ("cannot"), 不 starts
# 不确定 ("not sure"), 对 starts 对称 ("symmetric").
_BARE_ZH: dict[str, Polarity] = {"无": "no", "不": "no", "对": "yes"}
_POLARITY_EN = re.compile(r"\b(yes|no)\b")
_LEADING_JUNK = re.compile(r"^[\s\W_]+")
_TRAILING_JUNK = re.compile(r"[\s\W_]+$")


def normalise(text: str) -> str:
    """The VQA normalisation (module docstring): what exact match compares."""
    text = _THOUSANDS.sub("", unicodedata.normalize("NFKC", text).lower())
    out = []
    for i, ch in enumerate(text):
        if ch == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
            out.append(ch)  # 1.5 stays a number
        elif unicodedata.category(ch)[0] in "PS":
            out.append(" ")
        else:
            out.append(ch)
    words = [_NUMBER_WORDS.get(w, w) for w in "".join(out).split() if w not in _ARTICLES]
    return " ".join(words)


def tokens(text: str) -> list[str]:
    """Normalised tokens: Latin words and numbers whole, each CJK character one token."""
    return _TOKEN.findall(normalise(text))


def answer_span(reply: str) -> str:
    """The first sentence of the reply's decisive part."""
    region, _ = decisive_part(reply)
    region = region.strip()
    match = _SENTENCE_END.search(region)
    return (region[: match.start()] if match else region).strip()


def polarity(answer: str) -> Polarity | None:
    """Whether a *published* answer is a yes or a no (English or SLAKE's Chinese forms); None for other answers."""
    text = normalise(answer).replace(" ", "")
    if text in ("yes", *YES_ZH):
        return "yes"
    if text in ("no", *NO_ZH, "无"):
        return "no"
    return None


def _leading(text: str) -> Polarity | None:
    text = _LEADING_JUNK.sub("", unicodedata.normalize("NFKC", text)).lower()
    if _TRAILING_JUNK.sub("", text) in _BARE_ZH:
        return _BARE_ZH[_TRAILING_JUNK.sub("", text)]
    english = re.match(r"(yes|no)\b", text)
    if english:
        return "yes" if english.group(1) == "yes" else "no"
    for word in NO_ZH:
        if text.startswith(word):
            return "no"
    for word in YES_ZH:
        if text.startswith(word):
            return "yes"
    return None


def _found(text: str) -> set[Polarity]:
    text = unicodedata.normalize("NFKC", text).lower()
    found: set[Polarity] = {"yes" if w == "yes" else "no" for w in _POLARITY_EN.findall(text)}
    for word in NO_ZH:
        if word in text:
            found.add("no")
            text = text.replace(word, " ")
    if any(word in text for word in YES_ZH):
        found.add("yes")
    return found


def verdict(reply: str) -> Polarity | None:
    """The yes or no a reply commits to (module docstring); None when it commits to neither or to both."""
    span = answer_span(reply)
    lead = _leading(span)
    if lead is not None:
        return lead
    for text in (span, decisive_part(reply)[0]):
        found = _found(text)
        if found:
            return next(iter(found)) if len(found) == 1 else None
    return None


def exact_match(reply: str, answers: Sequence[str]) -> bool:
    """The normalised answer span equals one of the normalised published answers."""
    span = normalise(answer_span(reply))
    return bool(span) and any(span == normalise(a) for a in answers)


def token_recall(reply: str, answer: str) -> float:
    """Share of the answer's tokens found in the reply's decisive part, each at most as often as the answer has it."""
    gold = Counter(tokens(answer))
    if not gold:
        raise ValueError(f"answer {answer!r} has no tokens to recall")
    found = Counter(tokens(decisive_part(reply)[0]))
    return sum((gold & found).values()) / sum(gold.values())
