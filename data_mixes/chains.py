"""What a teacher is asked for one question, and how its reply is checked before a chain of thought is kept
(``spinegpt data distill``; the run itself is :mod:`spinegpt.data_mixes.distill`).

A reply is kept only when it has a separable chain of thought, was not cut at the token limit, does not repeat
itself, and its final answer is verified: for a multiple-choice item the project's answer rules
(:func:`spinegpt.eval_hooks.answers.parse_choices`) must read exactly the key's letters (a hedge or no answer is a
rejection); for an open-ended item a judge model (or the teacher itself, as the user chooses) must say that the final
answer agrees with the reference. Every rejection has one of the stable reasons of :data:`REJECTIONS`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spinegpt.data_mixes.rows import IMAGE_TAG
from spinegpt.eval_hooks.answers import parse_choices
from spinegpt.eval_hooks.llm_client import Completion, ReplyError

DEFAULT_TEMPLATE = """{question}

Think the question through step by step before you answer: write your reasoning under a line "## Thinking", then \
your final answer under a line "## Final Response". If the question lists lettered options, begin the final response \
with the letter of the correct option (or the letters, if several are correct)."""
"""The teacher's request: ``{question}`` is replaced by the item's question (the last user turn). The headings are
HuatuoGPT-o1's layout, which the answer rules and the chain separation both read."""
QUESTION = "{question}"

REJECTIONS: tuple[str, ...] = (
    "truncated",
    "empty reply",
    "repetition",
    "no separable reasoning",
    "no answer",
    "wrong answer",
    "disagrees with reference",
)
"""Why a reply is not kept, in the order the checks run (the first that applies is the reason)."""

REPEAT_SPAN = 12
REPEAT_TIMES = 4
"""A reply repeats itself when one span of ``REPEAT_SPAN`` tokens (words, punctuation marks, CJK characters) occurs
``REPEAT_TIMES`` times or more: the loop a model falls into when decoding degenerates. A sound chain restates facts
in other words; it does not say the same twelve tokens four times."""


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def check_template(template: str, where: str) -> str:
    """The template, or a ValueError naming ``where`` when it does not hold ``{question}`` exactly once."""
    found = template.count(QUESTION)
    if found != 1:
        raise ValueError(f"{where}: a prompt template holds {QUESTION} exactly once (found {found} times)")
    return template


# -- the question -------------------------------------------------------------------------------------------------

_OPTION = re.compile(r"^[ \t]*\(?([A-Ha-h])[\.\)）:：][ \t]*(\S.*?)[ \t]*$", re.M)


def options_of(question: str) -> dict[str, str]:
    """The lettered options (``A. text`` / ``(B) text`` / ``C) text`` lines) of a multiple-choice question, in the
    order given; a letter listed twice keeps its first text."""
    found: dict[str, str] = {}
    for letter, text in _OPTION.findall(question):
        found.setdefault(letter.upper(), text)
    return found


@dataclass(frozen=True)
class Question:
    """One selected item, as the teacher and the verification need it."""

    kind: Literal["mcq", "open"]
    messages: list[dict[str, str]]
    """The conversation up to the answer (system and user turns; ``<image>`` tags one per file of ``images``)."""
    images: list[str]
    """Absolute image paths, in tag order."""
    reference: str
    """The item's own answer: the key for a multiple-choice item, the reference for an open-ended one."""
    key: list[str] = field(default_factory=list)
    """Multiple choice: the key's letters (sorted)."""
    options: dict[str, str] = field(default_factory=dict)
    """Multiple choice: letter -> option text."""

    @property
    def text(self) -> str:
        """The last user turn without image tags: what a judge reads."""
        last = next(m["content"] for m in reversed(self.messages) if m["role"] == "user")
        return last.replace(IMAGE_TAG, "").strip()


def mcq_key(question: str, answer: str) -> tuple[dict[str, str], list[str]] | str:
    """The options and the key letters of a multiple-choice item, or why it has none (a string)."""
    options = options_of(question)
    if len(options) < 2:
        return "no options"
    key = parse_choices(answer, "".join(options), multi=True, options=options)
    return (options, key) if key else "no answer key"


# -- the request --------------------------------------------------------------------------------------------------


def _image_part(path: str) -> tuple[dict[str, Any], str]:
    """An OpenAI ``image_url`` part carrying the file as a data URL, and the file's sha256 (the cache key's part)."""
    data = Path(path).read_bytes()
    mime = mimetypes.guess_type(path)[0] or "image/png"
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}, hashlib.sha256(data).hexdigest()


def request_messages(question: Question, template: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The teacher's messages (the last user turn wrapped in ``template``, images as data-URL parts where their
    tags stand), and the same messages with each image replaced by its sha256: what the reply cache is keyed by."""
    last_user = max(i for i, m in enumerate(question.messages) if m["role"] == "user")
    images = iter(question.images)
    sent: list[dict[str, Any]] = []
    keyed: list[dict[str, Any]] = []
    for i, message in enumerate(question.messages):
        text = template.replace(QUESTION, message["content"]) if i == last_user else message["content"]
        if IMAGE_TAG not in text:
            sent.append({"role": message["role"], "content": text})
            keyed.append({"role": message["role"], "content": text})
            continue
        parts: list[dict[str, Any]] = []
        key_parts: list[dict[str, Any]] = []
        for k, piece in enumerate(text.split(IMAGE_TAG)):
            if k:
                part, digest = _image_part(next(images))
                parts.append(part)
                key_parts.append({"type": "image", "sha256": digest})
            if piece.strip():
                parts.append({"type": "text", "text": piece})
                key_parts.append({"type": "text", "text": piece})
        sent.append({"role": message["role"], "content": parts})
        keyed.append({"role": message["role"], "content": key_parts})
    return sent, keyed


# -- the reply ----------------------------------------------------------------------------------------------------

_THINK = re.compile(r"<think>(.*?)</think>", re.S | re.I)
_FINAL = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?\**[ \t]*(?:final[ \t]+(?:response|answer)|最终(?:答案|回答))[ \t]*\**[ \t]*"
    r"(?:[:：][ \t]*\**|(?=\n)|$)",
    re.I | re.M,
)
_THINKING = re.compile(r"^\s*(?:#{1,6}\s*)?\**\s*(?:thinking|reasoning|思考(?:过程)?)\s*\**\s*[:：]?\s*\**\s*\n", re.I)


def separate(completion: Completion) -> tuple[str, str]:
    """(chain of thought, final answer) of a reply; the chain is ``""`` where none is separable.

    In order: a ``reasoning_content`` the server sent apart (reasoning parsers of vLLM / SGLang, DeepSeek's API; the
    same field ms-swift's distill sampler reads), a ``<think>...</think>`` block (R1-style models), a ``Final
    Response`` / ``Final Answer`` heading (the default prompt's layout). A reply with none of them is all answer."""
    content = completion.content
    if completion.reasoning and completion.reasoning.strip():
        return completion.reasoning.strip(), _after_final(content)
    think = _THINK.search(content)
    if think:
        return think.group(1).strip(), _after_final(content[think.end() :])
    headings = list(_FINAL.finditer(content))
    if headings:
        last = headings[-1]
        return _THINKING.sub("", content[: last.start()], count=1).strip(), content[last.end() :].strip()
    return "", content.strip()


def _after_final(text: str) -> str:
    headings = list(_FINAL.finditer(text))
    return (text[headings[-1].end() :] if headings else text).strip()


_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|\w+|[^\w\s]")


def repetition(text: str, span: int = REPEAT_SPAN, times: int = REPEAT_TIMES) -> str | None:
    """Why ``text`` repeats itself (see :data:`REPEAT_SPAN`), or None. Written here: the check is a dozen lines and
    the libraries that offer one (n-gram blocking in generation) act while decoding, not on a finished reply."""
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) < span * times:
        return None
    counts = Counter(tuple(tokens[i : i + span]) for i in range(len(tokens) - span + 1))
    gram, n = counts.most_common(1)[0]
    if n < times:
        return None
    return f"a span of {span} tokens occurs {n} times: {' '.join(gram)[:80]!r}"


@dataclass(frozen=True)
class Check:
    """What the checks before any judge found: a rejection, or the chain and the answer to verify."""

    reasoning: str = ""
    answer: str = ""
    reason: str | None = None
    detail: str = ""


def check_reply(completion: Completion, min_reasoning_chars: int) -> Check:
    """The checks every reply passes before its answer is verified, first failing one wins (:data:`REJECTIONS`)."""
    if completion.finish_reason == "length":
        return Check(reason="truncated", detail=f"cut at the token limit after {completion.completion_tokens} tokens")
    whole = f"{completion.reasoning or ''}\n{completion.content}"
    if not whole.strip():
        return Check(reason="empty reply")
    repeated = repetition(whole)
    if repeated:
        return Check(reason="repetition", detail=repeated)
    reasoning, answer = separate(completion)
    if len(reasoning) < min_reasoning_chars:
        how = "no reasoning before the final answer" if not reasoning else f"{len(reasoning)} characters of reasoning"
        return Check(reason="no separable reasoning", detail=f"{how} (at least {min_reasoning_chars} wanted)")
    if not answer:
        return Check(reason="no answer", detail="the reply has reasoning but no final answer")
    return Check(reasoning=reasoning, answer=answer)


def verify_choice(question: Question, answer: str) -> tuple[str | None, str, dict[str, Any]]:
    """(rejection or None, detail, verdict) of a multiple-choice answer: the rules must read exactly the key."""
    letters = "".join(question.options)
    read = parse_choices(answer, letters, multi=len(question.key) > 1, options=question.options)
    verdict = {"method": "answer_rules", "key": question.key, "read": read}
    if not read:
        return "no answer", "the final answer commits to no option (or hedges between options)", verdict
    if read != question.key:
        return "wrong answer", f"read {''.join(read)}, the key is {''.join(question.key)}", verdict
    return None, "", verdict


# -- agreement with a reference (open-ended items) ------------------------------------------------------------------

AGREEMENT_VERSION = 1
AGREEMENT_SYSTEM = (
    "You check whether a candidate's final answer to a medical question agrees with the reference answer written by "
    "experts. Judge the medical content only: the same diagnosis, finding, level, treatment or fact in any wording "
    "agrees, and correct added detail does not change that; a different, contradicting, incomplete where it matters, "
    "or non-committal answer does not agree. You do not answer the question yourself. Reply with one JSON object "
    'only: {"agrees": true} or {"agrees": false}.'
)


def agreement_prompt(question: str, reference: str, answer: str) -> str:
    return (
        f"## Question\n{question.strip()}\n\n## Reference answer\n{reference.strip()}\n\n"
        f"## Candidate's final answer\n{answer.strip()}\n\n"
        '## Your reply\n{"agrees": true} or {"agrees": false}'
    )


def parse_agreement(content: str) -> bool:
    """Strict: a JSON object whose ``agrees`` is a boolean (fences and text around it tolerated)."""
    text = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", content.strip())
    match = re.search(r"\{.*\}", text, re.S)
    try:
        data = json.loads(match.group(0) if match else text)
    except ValueError:
        raise ReplyError('not an {"agrees": true|false} object') from None
    if not isinstance(data, dict) or not isinstance(data.get("agrees"), bool):
        raise ReplyError('not an {"agrees": true|false} object')
    return bool(data["agrees"])


def reason_counts(reasons: Sequence[str]) -> dict[str, int]:
    """Rejections counted by reason, in the order of :data:`REJECTIONS`."""
    found = Counter(reasons)
    return {r: found[r] for r in REJECTIONS if found[r]}
