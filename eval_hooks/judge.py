"""LLM-as-judge for SpineBench reports, over any OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted
API).

The judge gets the rubric of the paper's ten dimensions and must reply with strict JSON: every dimension, an integer
1-5. A reply that is not that (HTTP error, timeout, malformed or incomplete JSON) is retried with exponential backoff;
an item whose judgment still fails is recorded as failed with the reason, and never given a score it did not get.
Verdicts are cached on disk by (judge model, prompt, answer), so a re-run pays nothing twice. The API key is read from
the environment variable configured for this judge (and only that one) and sent only in the Authorization header:
it is never logged, cached or written to a result.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks.config import JudgeConfig
from spinegpt.eval_hooks.llm_client import ChatClient, ReplyCache, ReplyError, Server
from spinegpt.eval_hooks.spinebench import DIMENSION_CRITERIA, DIMENSIONS

from spinegpt.progress import Progress

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


class Judge:
    """Grades reports on the paper's rubric through :class:`ChatClient`; verdicts cached by (judge model, prompt,
    answer), so a re-run pays nothing twice."""

    def __init__(
        self, config: JudgeConfig, cache_path: Path | None = None, sleep: Callable[[float], None] = time.sleep
    ):
        """``cache_path``: the SQLite verdict cache (None: no caching)."""
        self.config = config
        server = Server(
            config.base_url,
            config.model,
            config.api_key_env,
            config.timeout_s,
            config.max_attempts,
            config.backoff_s,
            config.temperature,
        )
        self._client = ChatClient(server, sleep=sleep)
        self._cache = ReplyCache(cache_path, "judge_verdicts") if cache_path else None

    @property
    def requests_sent(self) -> int:
        return self._client.requests_sent

    def judge_one(self, prompt: str, answer: str, reference: str | None = None) -> Judgment:
        content = rubric_prompt(prompt, answer, reference)
        key = ReplyCache.key(RUBRIC_VERSION, self.config.model, content, answer)
        if self._cache is not None and (hit := self._cache.get(key)) is not None:
            return Judgment(scores=hit, attempts=0, cached=True)
        outcome = self._client.ask(SYSTEM_PROMPT, content, parse_verdict)
        if outcome.value is not None and self._cache is not None:
            self._cache.put(key, outcome.value)
        return Judgment(scores=outcome.value, attempts=outcome.attempts, errors=outcome.errors)

    def judge_many(self, items: Sequence[tuple[str, str, str | None]]) -> list[Judgment]:
        """Judge (prompt, answer, reference) triples with bounded concurrency; results in input order. Items not
        judged within ``phase_timeout_s`` are recorded as failed judgments (never scored)."""
        pool = ThreadPoolExecutor(max_workers=max(1, self.config.concurrency), thread_name_prefix="judge")
        futures = [pool.submit(self.judge_one, *item) for item in items]
        progress = Progress("[spinegpt eval] judging", len(futures), unit="reports")
        done = set()
        try:
            for future in as_completed(futures, timeout=self.config.phase_timeout_s):
                done.add(future)
                progress.advance()
        except TimeoutError:
            pass  # the phase is over: what is not done is recorded as failed below
        progress.close()
        # Requests still in flight end by their own deadline; nothing waits for them here.
        pool.shutdown(wait=False, cancel_futures=True)
        why = f"judging phase exceeded {self.config.phase_timeout_s:g}s (eval.judge.phase_timeout_s)"
        return [f.result() if f in done else Judgment(scores=None, attempts=0, errors=[why]) for f in futures]

    def close(self) -> None:
        self._client.close()
        if self._cache is not None:
            self._cache.close()
