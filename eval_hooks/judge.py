"""LLM-as-judge for SpineBench reports, over any OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted
API).

The judge gets the rubric of the paper's ten dimensions and must reply with strict JSON: every dimension, an integer
1-5. A reply that is not that (HTTP error, timeout, malformed or incomplete JSON) is retried with exponential backoff;
an item whose judgment still fails is recorded as failed with the reason, and never given a score it did not get.
Verdicts are cached on disk by (judge model, prompt, answer), so a re-run pays nothing twice. The API key is read from
the environment and sent only in the Authorization header: it is never logged, cached or written to a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinegpt.eval_hooks.config import JudgeConfig
from spinegpt.eval_hooks.spinebench import DIMENSION_CRITERIA, DIMENSIONS

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


class JudgeReplyError(ValueError):
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


class VerdictCache:
    """(judge model, prompt, answer) -> verdict, in SQLite; safe to share between threads of one process."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, scores TEXT NOT NULL)")
            self._db.commit()

    @staticmethod
    def key(model: str, prompt: str, answer: str) -> str:
        blob = json.dumps([RUBRIC_VERSION, model, prompt, answer], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, int] | None:
        with self._lock:
            row = self._db.execute("SELECT scores FROM verdicts WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, scores: dict[str, int]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, json.dumps(scores)))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Judge:
    def __init__(
        self, config: JudgeConfig, cache_path: Path | None = None, sleep: Callable[[float], None] = time.sleep
    ):
        """``cache_path``: the SQLite verdict cache (None: no caching)."""
        self.config = config
        self._sleep = sleep
        self._cache = VerdictCache(cache_path) if cache_path else None
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def _api_key(self) -> str | None:
        # Only the variable configured for this judge: a general-purpose key (OPENAI_API_KEY) must never reach
        # whatever server --judge-url names.
        return os.environ.get(self.config.api_key_env) or None

    def _post(self, content: str) -> str:
        body = {
            "model": self.config.model,
            "temperature": self.config.temperature,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}],
        }
        request = urllib.request.Request(
            self.config.base_url.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        key = self._api_key()
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        with self._count_lock:
            self.requests_sent += 1
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
            payload = json.loads(response.read().decode())
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise JudgeReplyError("response is not a chat completion (no choices[0].message.content)") from None

    def judge_one(self, prompt: str, answer: str, reference: str | None = None) -> Judgment:
        content = rubric_prompt(prompt, answer, reference)
        key = VerdictCache.key(self.config.model, content, answer)
        if self._cache is not None and (hit := self._cache.get(key)) is not None:
            return Judgment(scores=hit, attempts=0, cached=True)
        errors: list[str] = []
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                scores = parse_verdict(self._post(content))
            except urllib.error.HTTPError as exc:
                errors.append(f"HTTP {exc.code}")
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                errors.append(f"connection: {type(reason).__name__}: {reason}")
            except (JudgeReplyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                errors.append(f"bad reply: {exc}")
            else:
                if self._cache is not None:
                    self._cache.put(key, scores)
                return Judgment(scores=scores, attempts=attempt, errors=errors)
            if attempt < self.config.max_attempts:
                delay = self.config.backoff_s * 2 ** (attempt - 1)
                self._sleep(delay * (0.5 + random.random()))
        return Judgment(scores=None, attempts=self.config.max_attempts, errors=errors)

    def judge_many(self, items: Sequence[tuple[str, str, str | None]]) -> list[Judgment]:
        """Judge (prompt, answer, reference) triples with bounded concurrency; results in input order."""
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            return list(pool.map(lambda item: self.judge_one(*item), items))

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
