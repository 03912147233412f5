"""Which option letters does a free-text model answer commit to?

Models rarely answer with a bare letter: they reason first ("A is unlikely because ... so the answer is C"), wrap
the answer (``\\boxed{C}``, ``<answer>C</answer>``, ``**C**``), answer in Chinese (``答案：C``), or restate the
option text instead of its letter. :func:`parse_choices` looks for the *decisive* part of an answer, in order of how
explicitly the model marked it, and reads letters only there:

1. the last ``<answer>...</answer>`` block, 2. the last ``\\boxed{...}``, 3. the section after the last
``## Final Response`` / ``Final Answer`` heading (HuatuoGPT style), 4. the text after the last answer cue
("the answer is", "Answer:", "答案", "选" ...), 5. a reply that *starts* with an option (``B``, ``(B)``, ``B.``),
6. option texts (``options``) mentioned in the final part.

An answer that commits to no option, or to several where one is wanted ("A or B"), gives ``[]``: scored as wrong
and counted as unparsed, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_FINAL_HEADING = re.compile(
    r"^\s*#*\s*\**\s*(?:final\s+(?:response|answer)|最终(?:答案|回答))\s*\**\s*[:：]?\s*\**\s*$", re.I | re.M
)
# Phrases after which a model states its choice. The last one in the text wins: earlier ones are usually reasoning.
_CUES = re.compile(
    r"(?:"
    r"(?:the\s+)?(?:final\s+|correct\s+|best\s+|right\s+)?(?:answer|option|choice)s?\s*(?:would\s+be|is|are|:)"
    r"|answer\s*[:：]"
    r"|i\s+(?:would\s+)?(?:choose|select|pick)"
    r"|(?:正确)?答案\s*(?:应该|应|为|是)?\s*[:：]?"
    r"|(?:故|应|所以|因此)?选(?:择)?(?!项)"
    r")",
    re.I,
)
_MARKUP = re.compile(r"[*_`#>]")


def _letters_pattern(letters: str) -> str:
    return f"[{re.escape(letters)}]"


def _leading_letters(region: str, letters: str, strict: bool) -> tuple[list[str], bool] | None:
    """Option letters a region *starts* with (``B``, ``(B)``, ``B, D``, ``B and D``), and whether 'or' joined them.

    ``strict`` (for a whole reply with no cue) requires the letter to be visibly an option -- followed by ``.``,
    ``)``, ``:``, a comma-list or the end -- so a sentence starting "A 45-year-old ..." is not read as option A.
    """
    text = _MARKUP.sub("", region).strip()
    letter = _letters_pattern(letters)
    one = rf"[\(\[\{{]?\s*(?:option\s+|选项\s*)?({letter})\s*[\)\]\}}]?(?![A-Za-z0-9])"
    joiner = r"\s*(?:,|，|、|;|/|&|\band\b|\bor\b|和|或|以及)\s*"
    match = re.match(rf"[\s\"'“”:：\-]*{one}((?:{joiner}{one})*)", text, re.I)
    if not match:
        return None
    if strict:
        after = text[match.end() :]
        if after.strip() and not re.match(r"\s*[\.\)\]:：,，]|\s*$", after) and not match.group(2):
            return None
    found = [
        match.group(1).upper(),
        *(m.upper() for m in re.findall(rf"(?<![A-Za-z0-9])({letter})(?![A-Za-z0-9])", match.group(2), re.I)),
    ]
    used_or = bool(re.search(r"\bor\b|或", match.group(2) or "", re.I))
    return [f for f in found if f in letters], used_or


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", _MARKUP.sub("", text)).strip().lower()


def _option_mentions(region: str, options: Mapping[str, str]) -> list[str]:
    """Letters whose option text appears in ``region`` (longest texts first, so 'L5/S1' never counts as 'L5')."""
    text = _norm(region)
    found = []
    for letter, option in sorted(options.items(), key=lambda kv: -len(kv[1])):
        needle = _norm(option).rstrip(".")
        if not needle:
            continue
        pattern = rf"(?<![\w/]){re.escape(needle)}(?![\w/])"
        if re.search(pattern, text):
            found.append(letter)
            text = re.sub(pattern, " ", text)
    return found


def _decide(found: list[str], used_or: bool, multi: bool) -> list[str]:
    unique = sorted(set(found))
    if multi:
        return [] if used_or else unique
    return unique if len(unique) == 1 and not used_or else []


def _regions(text: str) -> list[tuple[str, bool]]:
    """Candidate decisive regions, most explicit first; the flag says whether the region is an explicit answer."""
    regions: list[tuple[str, bool]] = []
    tags = _ANSWER_TAG.findall(text)
    if tags:
        regions.append((tags[-1], True))
    boxed = _BOXED.findall(text)
    if boxed:
        regions.append((boxed[-1], True))
    headings = list(_FINAL_HEADING.finditer(text))
    final = text[headings[-1].end() :] if headings else text
    cues = list(_CUES.finditer(final))
    if cues:
        regions.append((final[cues[-1].end() :], True))
    if headings:
        regions.append((final, False))
    regions.append((text, False))
    return regions


def parse_choices(
    text: str, letters: str = "ABCDE", multi: bool = False, options: Mapping[str, str] | None = None
) -> list[str]:
    """The option letters ``text`` commits to, sorted; ``[]`` when it commits to none or is ambiguous."""
    if not text or not text.strip():
        return []
    letters = letters.upper()
    body = _THINK.sub(" ", text).strip() or text
    option_map = {k.upper(): v for k, v in (options or {}).items() if k.upper() in letters}
    for region, explicit in _regions(body):
        leading = _leading_letters(region, letters, strict=not explicit)
        if leading is not None and leading[0]:
            return _decide(leading[0], leading[1], multi)
        if option_map:
            clause = region if multi else re.split(r"(?<=[.!?。！？])\s|\n", region.strip(), maxsplit=1)[0]
            mentioned = _option_mentions(clause if explicit else region, option_map)
            if mentioned:
                used_or = bool(re.search(r"\bor\b|或", region, re.I)) and len(mentioned) > 1
                return _decide(mentioned, used_or, multi)
        if explicit:
            return []  # the model marked its answer, and it names no option: unparsed, not guessed elsewhere
    return []
