"""The optional second reader of multiple-choice answers: when the rules of ``answers.py`` commit to nothing, an
OpenAI-compatible model is asked which option letters the answer commits to, or "none". Never a random or
most-similar guess: "none", a reply that names no valid option, and a server that keeps failing all leave the item
unparsed (scored wrong), and every item records which path decided it.

Off by default (``eval.extractor``). Cached and retried like the judge (``llm_client``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from spinegpt.eval_hooks.llm_client import ChatClient, CircuitOpen, Outcome, ReplyCache, ReplyError, Server

VERSION = 1
SYSTEM_PROMPT = (
    "You read answers to multiple-choice questions and report which option letters an answer commits to. You do "
    "not answer the question yourself and you do not judge whether the answer is right. Reply with one JSON object "
    'only: {"letters": [...]}.'
)


def extraction_prompt(question: str, options: Mapping[str, str], answer: str, multi: bool) -> str:
    listed = "\n".join(f"{k}. {v}" for k, v in options.items())
    how_many = "one or more options" if multi else "exactly one option"
    return (
        f"## Question (the answer should choose {how_many})\n{question.strip()}\n\n## Options\n{listed}\n\n"
        f"## The answer to read\n{answer.strip() or '(empty)'}\n\n"
        "## Your reply\nThe letters of the options this answer finally commits to, as "
        '{"letters": ["B"]} (or several letters where it chooses several). If it commits to none, hedges between '
        'options, or refuses, reply {"letters": []}.'
    )


def parse_letters(content: str, letters: str, multi: bool) -> list[str]:
    """The letters of a strict ``{"letters": [...]}`` reply (fences tolerated); an invalid letter is a bad reply."""
    text = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", content.strip())
    match = re.search(r"\{.*\}", text, re.S)
    try:
        data = json.loads(match.group(0) if match else text)
        chosen = data["letters"]
    except (ValueError, KeyError, TypeError):
        raise ReplyError('not a {"letters": [...]} object') from None
    if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
        raise ReplyError("letters is not a list of strings")
    upper = sorted({c.strip().upper() for c in chosen})
    unknown = [c for c in upper if c not in letters]
    if unknown:
        raise ReplyError(f"letters {unknown} are not options ({letters})")
    # More than one letter for a single-answer item is a hedge the model read correctly: no commitment.
    return upper if multi or len(upper) <= 1 else []


@dataclass(frozen=True)
class Request:
    question: str
    options: Mapping[str, str]
    answer: str
    multi: bool


class Extractor:
    def __init__(
        self, server: Server, concurrency: int = 4, cache_path: Path | None = None, max_consecutive_failures: int = 0
    ):
        """``max_consecutive_failures``: give up after that many answers in a row fail (0: the server's own
        setting, see :class:`Server`)."""
        if max_consecutive_failures:
            server = replace(server, max_consecutive_failures=max_consecutive_failures)
        self.server, self.concurrency = server, concurrency
        self._client = ChatClient(server)
        # The extractor's reply texts (re-checked on every read); "extracted_letters" of earlier versions held letters.
        self._cache = ReplyCache(cache_path, "extractor_replies") if cache_path else None

    @property
    def requests_sent(self) -> int:
        return self._client.requests_sent

    def extract(self, request: Request) -> Outcome[list[str]]:
        letters = "".join(request.options)
        content = extraction_prompt(request.question, request.options, request.answer, request.multi)
        key = ReplyCache.key(VERSION, self.server.model, content)
        try:
            return self._client.ask(
                SYSTEM_PROMPT, content, lambda reply: parse_letters(reply, letters, request.multi), self._cache, key
            )
        except CircuitOpen as exc:  # the extractor kept failing: the rest stay unparsed at once, saying why
            limit = self.server.max_consecutive_failures
            return Outcome(None, 0, errors=[f"{exc}; not sent (eval.extractor.max_consecutive_failures: {limit})"])

    def extract_many(self, requests: Sequence[Request]) -> list[Outcome[list[str]]]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="extract") as pool:
            return list(pool.map(self.extract, requests))

    def close(self) -> None:
        self._client.close()
        if self._cache is not None:
            self._cache.close()
