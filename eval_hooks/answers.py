"""Which option letters does a free-text model answer commit to?

Models rarely answer with a bare letter: they reason first ("A is unlikely because ... so the answer is C"), wrap
the answer (``\\boxed{C}``, ``<answer>C</answer>``, ``**C**``), answer in Chinese (``答案：C``), or restate the
option text instead of its letter. :func:`parse_choices` looks for the *decisive* part of an answer, in order of how
explicitly the model marked it, and reads letters only there:

1. the last ``<answer>...</answer>`` block, 2. the last ``\\boxed{...}`` (LaTeX markup inside is read through:
``\\boxed{\\text{C}}``), 3. the section after the last ``## Final Response`` / ``Final Answer`` heading (HuatuoGPT
style), 4. the text after the last answer cue ("the answer is", "Answer:", "答案", "选" ...), 5. a reply that
*starts* with an option (``B``, ``(B)``, ``B.``, ``B) text``, ``(B) text``), 6. statements that affirm options
("Option C is the most appropriate", "C is correct; the others are incorrect", "Options B, D and E are correct",
"选项C正确"), 7. option texts (``options``) mentioned in the final part.

Letters may be separated (``B, D``, ``B and D``, ``(B)(D)``) or written together after a cue (``答案：BD``).

An answer that commits to no option, or to several where one is wanted ("A or B"), gives ``[]``: scored as wrong
and counted as unparsed, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

RULES_VERSION = 1
"""Recorded in every result's protocol (``answers.rules_version``). Bump it with any change that can read an answer
differently: results read by other rules are then refused side by side until re-scored (``spinegpt eval --rescore``)."""

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_FINAL_HEADING = re.compile(
    r"^\s*#*\s*\**\s*(?:final\s+(?:response|answer)|最终(?:答案|回答))\s*\**\s*[:：]?\s*\**\s*$", re.I | re.M
)
# Phrases after which a model states its choice. The last one in the text wins: earlier ones are usually reasoning.
_CUES = re.compile(
    r"(?:"
    r"(?:the\s+)?(?:final\s+|correct\s+|best\s+|right\s+)?(?:answer|option|choice)s?\s*"
    r"(?:would\s+be|(?:must|should|will)\s+be|is|are|:)"
    r"|response\s*[:：]"
    r"|(?:正确)?选项\s*(?:[:：]|为|是)"
    r"|answer\s*(?:[:：]|[-–—=]+>?|→)"
    r"|i\s+(?:would\s+)?(?:choose|select|pick)|i(?:'d|\s+would)\s+(?:go\s+with|opt\s+for)"
    r"|答\s*[:：]"
    r"|(?:正确)?答案\s*(?:应该|应|为|是)?\s*[:：]?"
    r"|(?:故|应|所以|因此)?选(?:择)?(?!项)"
    r")",
    re.I,
)
_MARKUP = re.compile(r"[*_`#>$]")
_LEAD = r"[\s\"'“”:：\-–—=→>]*"  # what may precede a leading option letter
_LATEX = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_AFFIRMED = r"(?:correct|right|true|accurate|appropriate|best|valid)"
_AFFIRM_ONE = (
    r"(?<![A-Za-z0-9])(?:option|choice|answer)?\s*[\(\[]?({letter})[\)\]]?(?:\s*[:.]\s*[^.\n;]*?)?\s+"
    r"(?:is|would\s+be|seems\s+to\s+be|appears\s+to\s+be)\s+(?:the\s+)?(?:single\s+)?(?:best\s+)?"
    rf"(?:(?:most\s+)?{_AFFIRMED}|most\s+likely)(?![A-Za-z])"
)
_AFFIRM_MANY = (
    r"(?<![A-Za-z0-9])(?:options|choices|answers)\s+((?:[\(\[]?{letter}[\)\]]?\s*(?:,|，|、|and|&|\s)\s*)+)"
    rf"(?:are|would\s+be)\s+(?:all\s+|both\s+)?(?:{_AFFIRMED})(?![A-Za-z])"
)
_AFFIRM_ZH = (
    r"(?:选项|答案)?\s*({letter}(?:\s*[、,，和及]?\s*{letter})*)\s*(?:项|选项)?\s*(?:是|为)?\s*"
    r"(?:正确|对的|最佳|最合适)"
)


def _letters_pattern(letters: str) -> str:
    return f"[{re.escape(letters)}]"


def _leading_letters(region: str, letters: str, strict: bool) -> tuple[list[str], bool] | None:
    """Option letters a region *starts* with (``B``, ``(B)``, ``B, D``, ``B and D``), and whether 'or' joined them.

    ``strict`` (for a whole reply with no cue) requires the letter to be visibly an option -- followed by ``.``,
    ``)``, ``:``, a comma-list or the end -- so a sentence starting "A 45-year-old ..." is not read as option A.
    """
    text = _MARKUP.sub("", region).strip()
    text = re.sub(r"([\)\]])\s*([\(\[])", r"\1, \2", text)  # (B)(D) and (B) (D): a list
    letter = _letters_pattern(letters)
    run = re.match(rf"{_LEAD}({letter}{{2,5}})(?![A-Za-z0-9])", text)
    # Letters written together after a cue ("答案：BD", "Answer: ACE"): only capitals, each once.
    together = run is not None and run.group(1).isupper() and len(set(run.group(1))) == len(run.group(1))
    if run and together and (not strict or re.match(r"\s*(?:[\.\)\]:：,，;。]|$)", text[run.end() :])):
        return list(run.group(1)), False
    one = rf"[\(\[\{{]?\s*(?:options?\s+|选项\s*)?({letter})\s*[\)\]\}}]?(?![A-Za-z0-9])"
    joiner = r"\s*(?:,|，|、|;|/|&|\band\b|\bor\b|和|或|以及)\s*"
    match = re.match(rf"{_LEAD}{one}((?:{joiner}{one})*)", text, re.I)
    if not match:
        return None
    if strict:
        after = text[match.end() :]
        bracketed = bool(re.search(r"[\(\)\[\]\{\}]", text[: match.end(1) + 2]))  # (B) text, B) text
        alone = re.match(r"\s*[\.\)\]:：,，]|\s*$|[ \t]*\n", after)  # punctuation, the end, or its own line
        if after.strip() and not alone and not match.group(2) and not bracketed:
            return None
    found = [
        match.group(1).upper(),
        *(m.upper() for m in re.findall(rf"(?<![A-Za-z0-9])({letter})(?![A-Za-z0-9])", match.group(2), re.I)),
    ]
    first_line = text.split("\n", 1)[0]
    # "(D) L4/L5 and (E) L5/S1", "C) L3/L4 and D) L4/L5": further labelled options on the same line.
    found += re.findall(rf"(?<![A-Za-z0-9])[\(\[]?({letter})[\)\]](?!\S*\))", first_line[match.end() :])
    used_or = bool(re.search(r"\bor\b|或", match.group(2) or "", re.I))
    return [f for f in found if f in letters], used_or


def _affirmed(region: str, letters: str) -> list[str] | None:
    """Letters the region affirms in a statement ("Option C is the most appropriate", "Options B and D are
    correct", "选项C正确"); the last statement wins. None when it affirms none."""
    text = _MARKUP.sub("", region)
    letter = _letters_pattern(letters)
    found: list[tuple[int, list[str]]] = []
    for pattern in (_AFFIRM_ONE, _AFFIRM_MANY, _AFFIRM_ZH):
        for match in re.finditer(pattern.format(letter=letter), text, re.I):
            chosen = re.findall(rf"(?<![A-Za-z0-9])({letter})(?![A-Za-z0-9])", match.group(1), re.I)
            chosen = chosen or re.findall(letter, match.group(1))  # 选项BD正确: letters written together
            if chosen and not re.search(
                r"\b(?:not|no|never|in)\s*$|不", text[max(0, match.start() - 8) : match.start()]
            ):
                found.append((match.start(), [c.upper() for c in chosen]))
    if not found:
        return None
    return max(found)[1]


def _concluded(region: str, letters: str) -> list[str] | None:
    """A reply that ends on "Therefore, B." / "Hence (C)": a capital option letter alone after a conclusion word."""
    match = re.search(
        rf"(?:therefore|thus|hence|so)\s*,?\s*(?:option\s+)?[\(\[]?({_letters_pattern(letters.upper())})[\)\]]?\s*[.。!]?\s*$",
        _MARKUP.sub("", region).strip(),
        re.I,
    )
    return [match.group(1)] if match and match.group(1).isupper() else None


def _labelled(region: str, letters: str) -> list[str] | None:
    """The one option a closing statement labels in parentheses ("The spine appears normal (E)."), if one."""
    last = re.split(r"(?<=[.!?。！？])\s+", _MARKUP.sub("", region).strip())[-1]
    found = set(re.findall(rf"\((?:option\s+|选项\s*)?({_letters_pattern(letters)})\)", last, re.I))
    return [found.pop().upper()] if len(found) == 1 else None


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
        regions.append((_LATEX.sub(r"\1", _LATEX.sub(r"\1", boxed[-1])), True))
    headings = list(_FINAL_HEADING.finditer(text))
    final = text[headings[-1].end() :] if headings else text
    cues = list(_CUES.finditer(final))
    if cues:
        regions.append((final[cues[-1].end() :], True))
    if headings:
        regions.append((final, False))
    regions.append((text, False))
    return regions


def decisive_part(text: str) -> tuple[str, bool]:
    """The most explicitly marked part of a free-text reply (answer tags, ``\\boxed{}``, the text after a final-answer
    heading or the last answer cue, else the whole reply, reasoning in ``<think>`` removed) and whether it was
    marked: where a short answer (a VQA answer, yes/no) is read, by the same rules that find option letters."""
    if not text or not text.strip():
        return "", False
    body = _THINK.sub(" ", text).strip() or text
    region, explicit = _regions(body)[0]
    return region.strip(), explicit


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
        affirmed = _affirmed(region, letters)
        if affirmed:
            return _decide(affirmed, False, multi)
        if option_map:
            clause = region if multi else re.split(r"(?<=[.!?。！？])\s|\n", region.strip(), maxsplit=1)[0]
            mentioned = _option_mentions(clause if explicit else region, option_map)
            if mentioned:
                used_or = bool(re.search(r"\bor\b|或", region, re.I)) and len(mentioned) > 1
                return _decide(mentioned, used_or, multi)
        labelled = _concluded(region, letters) or _labelled(region, letters)
        if labelled:
            return _decide(labelled, False, multi)
        if explicit:
            return []  # the model marked its answer, and it names no option: unparsed, not guessed elsewhere
    return []
