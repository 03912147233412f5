"""Asking an OpenAI-compatible chat server for one structured reply, the way the report judge and the answer
extractor both need it: retried with backoff, every failed attempt recorded, a total deadline per request, and a
disk cache so a re-run pays nothing twice.

The ``openai`` client speaks the protocol and ``tenacity`` schedules the retries. What neither has, written here:
a *total* deadline per request (a server that trickles bytes would otherwise hold a request forever, since HTTP
timeouts apply to each read), and the SQLite cache keyed by what decides the reply.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import openai
import tenacity

T = TypeVar("T")
NO_KEY = "EMPTY"
"""Sent when no key is configured: what local vLLM / SGLang servers accept; never another variable's key."""


class ReplyError(ValueError):
    """The server answered, but not with what was asked for (retried like any failure)."""


@dataclass(frozen=True)
class Server:
    """Where to ask and how patiently."""

    base_url: str
    model: str
    api_key_env: str
    timeout_s: float
    """Total seconds one request may take, however the server sends its bytes."""
    max_attempts: int
    backoff_s: float
    temperature: float = 0.0


@dataclass
class Outcome(Generic[T]):
    value: T | None
    attempts: int
    cached: bool = False
    errors: list[str] = field(default_factory=list)


class ReplyCache:
    """key -> JSON value in SQLite; safe to share between threads of one process."""

    def __init__(self, path: Path, table: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._table = table
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute(f"SELECT value FROM {self._table} WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?)", (key, json.dumps(value)))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


RETRIED = (openai.OpenAIError, OSError, ValueError)
"""Server errors, connection problems and timeouts, and replies that do not parse (UnicodeDecodeError and JSON
errors are ValueErrors). Anything else is a bug and is raised."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APIConnectionError | TimeoutError | OSError):
        return f"connection: {type(exc).__name__}: {exc}"
    return f"bad reply: {exc}"


class ChatClient:
    """One OpenAI-compatible server; ``ask`` returns a parsed reply or the reasons it could not get one."""

    def __init__(self, server: Server, sleep: Callable[[float], None] = time.sleep):
        self.server = server
        self._sleep = sleep
        # The key comes from the variable configured for this server only: a general-purpose OPENAI_API_KEY must
        # never reach whatever URL the configuration names (the client would read it when given no key).
        key = os.environ.get(server.api_key_env) or NO_KEY
        self._client = openai.OpenAI(api_key=key, base_url=server.base_url, max_retries=0, timeout=server.timeout_s)
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def _complete(self, system: str, user: str) -> str:
        with self._count_lock:
            self.requests_sent += 1
        deadline = time.monotonic() + self.server.timeout_s
        create = self._client.chat.completions.with_streaming_response.create
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        with create(model=self.server.model, temperature=self.server.temperature, messages=messages) as response:  # type: ignore[arg-type]
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete reply within {self.server.timeout_s:g}s")
        try:
            payload = json.loads(body)
            return str(payload["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise ReplyError("response is not a chat completion (no choices[0].message.content)") from None

    def ask(self, system: str, user: str, parse: Callable[[str], T]) -> Outcome[T]:
        errors: list[str] = []
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.server.max_attempts),
            wait=tenacity.wait_exponential_jitter(multiplier=self.server.backoff_s, jitter=self.server.backoff_s / 2),
            retry=tenacity.retry_if_exception_type(RETRIED),
            sleep=self._sleep,
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        value = parse(self._complete(system, user))
                    except RETRIED as exc:
                        errors.append(_describe(exc))
                        raise
                outcome = attempt.retry_state.outcome
                if outcome is not None and not outcome.failed:
                    return Outcome(value, attempt.retry_state.attempt_number, errors=errors)
        except tenacity.RetryError:
            pass
        return Outcome(None, self.server.max_attempts, errors=errors)

    def close(self) -> None:
        self._client.close()
