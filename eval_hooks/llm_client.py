"""Asking an OpenAI-compatible chat server for one structured reply, the way the report judge and the answer
extractor both need it: retried with backoff, every failed attempt recorded, a total deadline per request, and a
disk cache so a re-run pays nothing twice.

The ``openai`` client speaks the protocol and ``tenacity`` schedules the retries. What neither has, written here:
a *total* deadline per request (a server that trickles bytes would otherwise hold a request forever, since HTTP
timeouts apply to each read), the SQLite cache keyed by what decides the reply, and an opt-in circuit breaker (a
server that fails request after request stops the work that uses it instead of failing every remaining item).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import openai
import tenacity

from spinegpt.sqlite_cache import Cache

logger = logging.getLogger(__name__)

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
    max_consecutive_failures: int | None = None
    """Requests in a row that end without a reply (each after its attempts) before the server is given up on and
    every further request refused at once (:class:`CircuitBreaker`); None: never."""
    max_reply_bytes: int = 8 << 20
    """The largest reply body read (a verdict is a few hundred bytes, a long reasoning chain some tens of KB): a
    server that sends without end is cut off here, not at the deadline, with memory to match."""


@dataclass(frozen=True)
class Completion:
    """One chat completion as the server sent it."""

    content: str
    """The reply's text (``""`` when the server sent none)."""
    reasoning: str | None = None
    """A chain of thought the server sent apart from the content (``reasoning_content``: vLLM and SGLang with a
    reasoning parser, DeepSeek's API), if any."""
    finish_reason: str | None = None
    """``stop``, ``length`` (cut at the token limit), ...; None when the server does not say."""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "reasoning": self.reasoning,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    @staticmethod
    def valid_json(data: Any) -> bool:
        """Whether ``data`` is a completion as :meth:`to_json` writes it (the check a cached one must pass)."""
        if not isinstance(data, dict) or not isinstance(data.get("content"), str):
            return False
        texts = all(data.get(k) is None or isinstance(data[k], str) for k in ("reasoning", "finish_reason"))
        counts = all(
            type(data.get(k, 0)) is int and data.get(k, 0) >= 0 for k in ("prompt_tokens", "completion_tokens")
        )
        return texts and counts

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(
            str(data["content"]),
            data.get("reasoning"),
            data.get("finish_reason"),
            int(data.get("prompt_tokens", 0)),
            int(data.get("completion_tokens", 0)),
        )


class CircuitOpen(RuntimeError):
    """A request refused because its server's circuit breaker is open (the server kept failing)."""


class CircuitBreaker:
    """Opens after ``threshold`` requests in a row end without a reply (each after all its retries); a reply that
    arrives closes the count again. Shared by every thread asking one server; once open it stays open, and
    :class:`ChatClient` then refuses further requests with :class:`CircuitOpen` instead of retrying them."""

    def __init__(self, threshold: int, server: str):
        if threshold < 1:
            raise ValueError(f"a circuit breaker needs a threshold of at least 1, got {threshold}")
        self.threshold, self.server = threshold, server
        self._failures = 0
        self._reason: str | None = None
        self._lock = threading.Lock()

    @property
    def reason(self) -> str | None:
        """Why the breaker opened; None while it is closed."""
        return self._reason

    def check(self) -> None:
        if self._reason is not None:
            raise CircuitOpen(self._reason)

    def trip(self, reason: str) -> None:
        """Open the breaker now (the work is being abandoned): requests still retrying stop at their next try."""
        with self._lock:
            self._reason = self._reason or reason

    def record(self, ok: bool, errors: list[str]) -> None:
        with self._lock:
            if ok:
                self._failures = 0
                return
            self._failures += 1
            if self._failures >= self.threshold and self._reason is None:
                last = errors[-1] if errors else "no reply"
                self._reason = (
                    f"{self.server} failed {self._failures} requests in a row, each after its retries "
                    f"(last error: {last})"
                )


@dataclass
class Outcome(Generic[T]):
    value: T | None
    attempts: int
    cached: bool = False
    errors: list[str] = field(default_factory=list)


class ReplyCache(Cache):
    """Replies kept on disk by :meth:`key` (what decides them): a re-run pays nothing twice. A damaged file is set
    aside and started afresh (:class:`~spinegpt.sqlite_cache.Cache`); an entry is used only through the same check
    as a live reply (:meth:`ChatClient.ask` parses a cached reply text exactly as a fresh one)."""

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


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

    def __init__(
        self,
        server: Server,
        sleep: Callable[[float], None] = time.sleep,
        breaker: CircuitBreaker | None = None,
    ):
        """``breaker``: requests are refused with :class:`CircuitOpen` once it opens; None: one of the server's own
        when it sets ``max_consecutive_failures``, else never."""
        self.server = server
        if breaker is None and server.max_consecutive_failures is not None:
            breaker = CircuitBreaker(server.max_consecutive_failures, f"{server.model} at {server.base_url}")
        self.breaker = breaker
        self._sleep = sleep
        # The key comes from the variable configured for this server only: a general-purpose OPENAI_API_KEY must
        # never reach whatever URL the configuration names (the client would read it when given no key).
        key = os.environ.get(server.api_key_env) or NO_KEY
        self._client = openai.OpenAI(api_key=key, base_url=server.base_url, max_retries=0, timeout=server.timeout_s)
        self.requests_sent = 0
        """HTTP requests sent, retries included."""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        """Tokens the server reported for the replies it sent (what the requests cost)."""
        self._count_lock = threading.Lock()

    def _complete(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Completion:
        with self._count_lock:
            self.requests_sent += 1
        deadline = time.monotonic() + self.server.timeout_s
        create = self._client.chat.completions.with_streaming_response.create
        settings = {"temperature": self.server.temperature, **params}
        with create(model=self.server.model, messages=messages, **settings) as response:  # type: ignore[arg-type]
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete reply within {self.server.timeout_s:g}s")
                if len(body) > self.server.max_reply_bytes:
                    raise ReplyError(f"reply larger than {self.server.max_reply_bytes / 2**20:g} MiB; cut off there")
        try:
            payload = json.loads(body)
            choice = payload["choices"][0]
            message = choice["message"]
            content = message["content"]
            usage = payload.get("usage") or {}
            completion = Completion(
                content="" if content is None else str(content),
                reasoning=message.get("reasoning_content") or None,
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise ReplyError("response is not a chat completion (no choices[0].message.content)") from None
        with self._count_lock:
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
        return completion

    def ask(
        self, system: str, user: str, parse: Callable[[str], T], cache: ReplyCache | None = None, key: str = ""
    ) -> Outcome[T]:
        """One system + user exchange; ``parse`` reads the reply's text (a ReplyError from it is retried).

        With ``cache``, the reply's *text* is kept under ``key``, and a cached text goes through ``parse`` exactly
        as a live one: an entry that fails it (tampered, or from a laxer parser) is dropped with a warning and the
        server asked again, never turned into a value the live path would have refused."""
        if cache is not None and (text := cache.get(key, lambda v: isinstance(v, str))) is not None:
            try:
                return Outcome(parse(text), attempts=0, cached=True)
            except ValueError as exc:
                logger.warning(f"cache {cache.path}: a cached reply fails its check ({exc}); asked again")
                cache.delete([key])
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        outcome = self.chat(messages, lambda completion: (completion.content, parse(completion.content)))
        if outcome.value is None:
            return Outcome(None, outcome.attempts, errors=outcome.errors)
        text, value = outcome.value
        if cache is not None:
            cache.put(key, text)
        return Outcome(value, outcome.attempts, errors=outcome.errors)

    def chat(self, messages: list[dict[str, Any]], parse: Callable[[Completion], T], **params: Any) -> Outcome[T]:
        """Any conversation (content may be a list of text and image parts); ``params`` go to the request
        (``max_tokens``, ``temperature``, ...). Raises :class:`CircuitOpen` when the breaker is (or goes) open."""
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
                    if self.breaker is not None:
                        self.breaker.check()  # not a RETRIED error: raised to the caller at once
                    try:
                        value = parse(self._complete(messages, params))
                    except RETRIED as exc:
                        errors.append(_describe(exc))
                        raise
                outcome = attempt.retry_state.outcome
                if outcome is not None and not outcome.failed:
                    if self.breaker is not None:
                        self.breaker.record(True, errors)
                    return Outcome(value, attempt.retry_state.attempt_number, errors=errors)
        except tenacity.RetryError:
            pass
        if self.breaker is not None:
            self.breaker.record(False, errors)
        return Outcome(None, self.server.max_attempts, errors=errors)

    def close(self) -> None:
        self._client.close()
