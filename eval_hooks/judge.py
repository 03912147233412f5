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

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from spinegpt.eval_hooks.config import JudgeConfig
from spinegpt.eval_hooks.llm_client import ChatClient, CircuitOpen, ReplyCache, Server
from spinegpt.eval_hooks.rubric import RUBRIC_VERSION, SYSTEM_PROMPT, Judgment, parse_verdict, rubric_prompt
from spinegpt.progress import Progress

logger = logging.getLogger(__name__)


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
            config.max_consecutive_failures,
        )
        self._client = ChatClient(server, sleep=sleep)
        # The judge's reply texts (re-checked on every read); "judge_verdicts" of earlier versions held parsed scores.
        self._cache = ReplyCache(cache_path, "judge_replies") if cache_path else None

    @property
    def requests_sent(self) -> int:
        return self._client.requests_sent

    def judge_one(self, prompt: str, answer: str, reference: str | None = None) -> Judgment:
        content = rubric_prompt(prompt, answer, reference)
        key = ReplyCache.key(RUBRIC_VERSION, self.config.model, content, answer)
        try:
            outcome = self._client.ask(SYSTEM_PROMPT, content, parse_verdict, self._cache, key)
        except CircuitOpen as exc:  # the judge kept failing: the rest are recorded as failed at once, saying why
            limit = self.config.max_consecutive_failures
            return Judgment(
                scores=None, attempts=0, errors=[f"{exc}; not sent (eval.judge.max_consecutive_failures: {limit})"]
            )
        return Judgment(scores=outcome.value, attempts=outcome.attempts, cached=outcome.cached, errors=outcome.errors)

    def judge_many(self, items: Sequence[tuple[str, str, str | None]]) -> list[Judgment]:
        """Judge (prompt, answer, reference) triples with bounded concurrency; results in input order. Items not
        judged within ``phase_timeout_s`` are recorded as failed judgments (never scored)."""
        pool = ThreadPoolExecutor(max_workers=max(1, self.config.concurrency), thread_name_prefix="judge")
        futures = [pool.submit(self.judge_one, *item) for item in items]
        progress = Progress("judging", len(futures), unit="reports", log=logger)
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
