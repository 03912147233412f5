"""``spinegpt data distill``: long reasoning chains for stage 2, written by a teacher model for selected
multiple-choice and open-ended SpineMed items and kept only when verified (SpineMed-450k paper, §5.2: "we extracted a
selection of multiple-choice and open-ended questions to construct long reasoning chains").

The output folder holds ``chains.jsonl`` (SpineMed-format items with ``task: reasoning``: the question, the chain in
``reasoning``, the verified final answer, and a provenance naming the source item, the teacher, the prompt's hash,
the sample and the verdict), ``rejected.jsonl`` (every reply not kept, with its reason) and ``manifest.json``.
Results are appended as they arrive, keyed by (source id, sample, prompt hash, teacher): a run stopped in any way
and started again with the same command continues where it stopped, with no duplicate and nothing lost.

ms-swift has a distillation sampler (``swift sample --sampler_type distill --sampler_engine client``); it is not
used: as installed it sends ``OPENAI_API_KEY`` to whatever URL it is given when no key is set, asserts on an empty
completion (one empty reply ends the whole run), has no deadline per request, and keeps every reply without
checking its answer against a key. What serves from it is its reading of a reply's ``reasoning_content`` (the same
field is read here, :func:`spinegpt.data_mixes.chains.separate`). The requests go through the project's own client
(``eval_hooks/llm_client.py``: retries, a total deadline per request, a reply cache, a circuit breaker).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spinegpt.data_mixes import build, mixes, readers, sources
from spinegpt.data_mixes.chains import (
    AGREEMENT_SYSTEM,
    AGREEMENT_VERSION,
    DEFAULT_TEMPLATE,
    Check,
    Question,
    agreement_prompt,
    check_reply,
    check_template,
    mcq_key,
    parse_agreement,
    reason_counts,
    request_messages,
    template_hash,
    verify_choice,
)
from spinegpt.data_mixes.mixes import Filters
from spinegpt.data_mixes.records import Bad, Record
from spinegpt.errors import UserError
from spinegpt.eval_hooks.config import JudgeConfig
from spinegpt.eval_hooks.llm_client import ChatClient, CircuitBreaker, CircuitOpen, Completion, ReplyCache, Server
from spinegpt.files import first_of, write_json_atomic
from spinegpt.paths import cache_root
from spinegpt.progress import Progress

logger = logging.getLogger(__name__)

FORMAT = 1
CHAINS = "chains.jsonl"
REJECTED = "rejected.jsonl"
MANIFEST = "manifest.json"
CACHE_VERSION = 1
TEACHER_KEY_ENV = "SPINEGPT_TEACHER_API_KEY"
DISTILLABLE = ("mcq", "open_qa", "vqa")
"""Tasks whose items are one question with one answer to verify against (``mcq`` by its key's letters, the others
by a judge)."""
DEFAULT_TASKS = ("mcq", "open_qa")
MANIFEST_EVERY_S = 10.0
"""The manifest is rewritten this often during a run (and at its end), so a killed run's figures are nearly current."""


class DistillError(UserError, ValueError):
    """A distillation that cannot start (bad source items, an output folder of another teacher, no judge, ...)."""


class DistillStopped(UserError, RuntimeError):
    """The run stopped before its end (the teacher kept failing); what was done is kept and a rerun continues."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Teacher(_Strict):
    """The model that writes the chains: any OpenAI-compatible chat-completions server."""

    base_url: str
    """API root, e.g. ``http://localhost:8000/v1`` (vLLM, SGLang, ``swift deploy``) or a hosted API."""
    model: str
    """The teacher's model name on that server."""
    api_key_env: str = TEACHER_KEY_ENV
    """Environment variable holding the key (never ``OPENAI_API_KEY`` unless named here); unset: no key is sent."""
    samples: int = Field(default=1, gt=0)
    """Chains asked for each item (each verified and kept or rejected on its own)."""
    temperature: float = Field(default=0.7, ge=0)
    """Sampling temperature of the teacher."""
    max_tokens: int = Field(default=4096, gt=0)
    """Token limit of one reply; a reply cut there is rejected as ``truncated``."""
    concurrency: int = Field(default=8, gt=0)
    """Requests in flight at once."""
    timeout_s: float = Field(default=600.0, gt=0)
    """Total seconds one request may take, however the server sends its bytes."""
    max_attempts: int = Field(default=4, gt=0)
    """Tries per request, the first included; a request that fails them all is counted failed (a rerun retries it)."""
    backoff_s: float = Field(default=2.0, ge=0)
    """First retry delay; doubles each retry, with jitter."""
    max_consecutive_failures: int = Field(default=5, gt=0)
    """Requests in a row that may fail (each after its retries) before the run stops: the circuit breaker."""

    def server(self) -> Server:
        return Server(
            self.base_url,
            self.model,
            self.api_key_env,
            self.timeout_s,
            self.max_attempts,
            self.backoff_s,
            self.temperature,
        )


class Selection(_Strict):
    """Which items of the source get chains: the mix filters, then a seeded count or fraction."""

    filters: Filters = Field(default_factory=Filters)
    """split, category, subspecialty, task, language; ``task`` unset means ``mcq`` and ``open_qa``."""
    count: int | None = Field(default=None, gt=0)
    """Take this many of the qualifying items."""
    fraction: float | None = Field(default=None, gt=0, le=1)
    """Take this fraction of the qualifying items."""
    seed: int = 42
    """The draw is a seeded shuffle of the qualifying items: a larger count keeps every item a smaller one drew."""
    text_only: bool = False
    """Leave out items with images (a text-only teacher); otherwise images are sent as data URLs."""

    @model_validator(mode="after")
    def _checks(self) -> Selection:
        if self.count is not None and self.fraction is not None:
            raise ValueError("give a count or a fraction, not both")
        other = [t for t in self.filters.task or [] if t not in DISTILLABLE]
        if other:
            raise ValueError(f"chains are distilled for {', '.join(DISTILLABLE)} items, not {', '.join(other)}")
        return self

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.filters.task) if self.filters.task else DEFAULT_TASKS


class DistillSettings(_Strict):
    """One distillation: the teacher, how open-ended answers are judged, which items, the prompt."""

    teacher: Teacher
    judge: JudgeConfig | None = None
    """Decides whether an open-ended item's final answer agrees with its reference; without one (and without
    ``teacher_judges``) open-ended items are refused."""
    teacher_judges: bool = False
    """The teacher itself decides agreement for open-ended items (at temperature 0)."""
    selection: Selection = Field(default_factory=Selection)
    template: str = DEFAULT_TEMPLATE
    """The teacher's request, ``{question}`` standing for the item's question; its sha256 is recorded."""
    template_file: str | None = None
    """Where the template came from (recorded; None: the built-in one)."""
    min_reasoning_chars: int = Field(default=40, ge=1)
    """A chain shorter than this is no separable reasoning."""
    on_error: Literal["error", "skip"] = "error"
    """A bad source item stops the run before any request with every problem listed, or is skipped and counted."""
    cache: bool = True
    """Replies and verdicts cached in ``$SPINEGPT_CACHE/distill-cache.sqlite``: a rerun pays nothing twice."""

    @field_validator("template")
    @classmethod
    def _one_question(cls, value: str) -> str:
        return check_template(value, "template")

    @model_validator(mode="after")
    def _one_judge(self) -> DistillSettings:
        if self.judge is not None and self.teacher_judges:
            raise ValueError("give a judge or let the teacher judge, not both")
        return self

    def judge_config(self) -> JudgeConfig | None:
        if self.teacher_judges:
            t = self.teacher
            return JudgeConfig(
                base_url=t.base_url,
                model=t.model,
                api_key_env=t.api_key_env,
                timeout_s=t.timeout_s,
                max_attempts=t.max_attempts,
                backoff_s=t.backoff_s,
            )
        return self.judge


@dataclass(frozen=True)
class SourceInput:
    """The question bank: a SpineMed-format file and how to read it."""

    label: str
    """A ``sources.yaml`` name, or the file's path."""
    path: Path
    options: readers.ReadOptions

    @property
    def image_root(self) -> Path:
        return self.options.image_root or self.path.parent


def source_input(source: str, data_root: Path | None, image_root: Path | None) -> SourceInput:
    """A ``sources.yaml`` source (read as a mix reads it, under ``data_root``) or a SpineMed-format file."""
    shipped = mixes.shipped_sources()
    if source in shipped and not Path(source).is_file():
        spec = shipped[source]
        if spec.reader != "spinemed":
            raise DistillError(
                f"source {source!r} is read by {spec.reader!r}: chains are distilled from SpineMed-format items "
                "(data_mixes/SPINEMED_SCHEMA.md), whose category and provenance the chains keep"
            )
        if data_root is None:
            raise DistillError(f"source {source!r} lives under the data root: give --data-root (or SPINEGPT_DATA_ROOT)")
        try:
            path = build.source_file(source, spec, data_root)
        except build.BuildError as exc:
            raise DistillError(str(exc)) from None
        options = build.read_options(spec, data_root)
        if image_root is not None:
            options = replace(options, image_root=image_root.resolve())
        return SourceInput(source, path.resolve(), options)
    path = Path(source)
    if not path.is_file():
        known = ", ".join(n for n, s in shipped.items() if s.reader == "spinemed")
        raise DistillError(f"{source}: no such file, and not a SpineMed source of sources.yaml ({known})")
    datasets = None
    if data_root is not None:
        spinemed = shipped.get("spinemed")
        datasets = data_root / spinemed.datasets_root if spinemed and spinemed.datasets_root else data_root
    options = readers.ReadOptions(image_root=image_root.resolve() if image_root else None, data_root=datasets)
    return SourceInput(str(path), path.resolve(), options)


# -- selection ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picked:
    """A selected item: the record (images resolved), the item as its file has it, and what is asked and checked."""

    record: Record
    raw: dict[str, Any]
    question: Question

    @property
    def kind(self) -> str:
        return self.question.kind


@dataclass
class Selected:
    items: list[Picked]
    read: int = 0
    qualifying: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    """Valid items the selection leaves out, by why (filters, task, images)."""
    unusable: Counter[str] = field(default_factory=Counter)
    """Items that cannot be distilled, by reason (bad items skipped with ``on_error: skip``, MCQs without a key)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "qualifying": self.qualifying,
            "selected": len(self.items),
            "excluded": dict(sorted(self.excluded.items())),
            "unusable": dict(sorted(self.unusable.items())),
            "multiple_choice": sum(p.kind == "mcq" for p in self.items),
            "open_ended": sum(p.kind == "open" for p in self.items),
        }


def _question(record: Record, raw: dict[str, Any] | None) -> Question | str:
    """What the teacher is asked and what its answer is checked against, or why the item has no such thing."""
    messages = record.messages
    if messages[-1]["role"] != "assistant":
        return "no reference answer"
    prompt = [dict(m) for m in messages[:-1]]
    answer = messages[-1]["content"]
    raw_messages = (raw or {}).get("messages") or []
    if raw_messages and raw_messages[-1].get("role") == "assistant" and not (raw or {}).get("reasoning"):
        answer = str(raw_messages[-1]["content"])  # the reference as written, never a rendered chain of thought
    if record.task != "mcq":
        return Question("open", prompt, list(record.images), answer)
    last_user = next(m["content"] for m in reversed(prompt) if m["role"] == "user")
    found = mcq_key(last_user, messages[-1]["content"])
    if isinstance(found, str):
        return found
    options, key = found
    return Question("mcq", prompt, list(record.images), answer, key, options)


def _records(source: SourceInput) -> Iterator[Record | Bad]:
    for item in sources.read("spinemed", source.path, source.options):
        if isinstance(item, Bad):
            yield item
            continue
        problem = build.check_record(item)
        if problem:
            where = f"{item.provenance.get('file')}:{item.provenance.get('line')}"
            yield Bad(where, "bad conversation", problem)
            continue
        yield item


def select(source: SourceInput, selection: Selection, on_error: str) -> Selected:
    """The items to distil, in source order. The source is read twice: once to find what qualifies (a few integers
    per item in memory), once to keep the drawn items with their raw form (image entries as written)."""
    filters = selection.filters.model_copy(update={"task": list(selection.tasks)})
    found = Selected([])
    qualifying: list[int] = []
    problems: list[str] = []
    progress = Progress(f"reading {source.label}", None, every_s=5.0, log=logger)
    for item in _records(source):
        progress.advance()
        if isinstance(item, Bad):
            found.unusable[item.reason] += 1
            if not item.skip:
                problems.append(str(item))
            continue
        found.read += 1
        if not filters.accepts(item.split, item.category, item.subspecialty, item.task, item.language):
            found.excluded["filtered out"] += 1
            continue
        if selection.text_only and item.images:
            found.excluded["has images (text only)"] += 1
            continue
        question = _question(item, None)
        if isinstance(question, str):
            found.unusable[question] += 1
            problems.append(f"{item.provenance.get('file')}:{item.provenance.get('line')}: {question}")
            continue
        qualifying.append(item.index)
    progress.close()
    if problems and on_error == "error":
        raise DistillError(
            f"{len(problems)} item(s) of {source.path} cannot be distilled (nothing was asked; --on-error skip "
            f"skips and counts them):\n{first_of(problems)}"
        )
    found.qualifying = len(qualifying)
    chosen = _draw(qualifying, selection)
    if not chosen:
        return found
    raw = {index: item for index, _, item in readers.iter_items(source.path) if index in chosen}
    for record in _records(source):
        if isinstance(record, Record) and record.index in chosen:
            question = _question(record, raw.get(record.index))
            assert isinstance(question, Question)  # it qualified on the first read
            found.items.append(Picked(record, raw[record.index], question))
    return found


def _draw(qualifying: list[int], selection: Selection) -> set[int]:
    n = len(qualifying)
    if selection.count is not None:
        wanted = selection.count
        if wanted > n:
            raise DistillError(f"--count {wanted}: only {n} item(s) qualify")
    elif selection.fraction is not None:
        wanted = round(selection.fraction * n)
    else:
        return set(qualifying)
    order = list(qualifying)
    # A seeded shuffle, not a sample: the first k of one permutation, so raising the count only adds items.
    random.Random(f"{selection.seed}/distill").shuffle(order)
    return set(order[:wanted])


# -- the output -----------------------------------------------------------------------------------------------------


def chain_id(source_id: str, sample: int) -> str:
    """Stable: the same item and sample give the same id in every run."""
    return f"{source_id}-cot{sample}"


Key = tuple[str, int, str, str]
"""(source id, sample, prompt sha256, teacher model): what a result is resumed by."""


class _Journal:
    """A JSONL file results are appended to, one flushed line each; a line cut short by a kill is dropped on reopen
    (its result is distilled again, so nothing is lost and nothing doubled)."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[dict[str, Any]] = []
        if path.is_file():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                logger.warning(f"{path}: dropped an incomplete last line (a run was stopped while writing it)")
                with path.open("r+b") as handle:
                    handle.truncate(end)
            for number, raw in enumerate(data[:end].splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    self.lines.append(json.loads(raw))
                except ValueError as exc:
                    raise DistillError(
                        f"{path}:{number}: not JSON ({exc}); this file is written by distill only"
                    ) from None
        self._handle = path.open("a", encoding="utf-8")

    def append(self, obj: dict[str, Any]) -> None:
        self._handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _key_of(line: dict[str, Any], where: str) -> Key:
    fields = line.get("provenance", line)
    try:
        return (str(fields["source_id"]), int(fields["sample"]), str(fields["prompt_sha256"]), str(fields["teacher"]))
    except (KeyError, TypeError, ValueError):
        raise DistillError(f"{where}: a result without source_id, sample, prompt_sha256 and teacher") from None


# -- the run --------------------------------------------------------------------------------------------------------


@dataclass
class _Result:
    picked: Picked
    sample: int
    completion: Completion | None = None
    cached: bool = False
    attempts: int = 0
    check: Check = field(default_factory=Check)
    reason: str | None = None
    detail: str = ""
    verdict: dict[str, Any] | None = None
    failed: str | None = None
    """``teacher`` or ``judge``: no verdict could be had (counted; a rerun tries again)."""
    errors: list[str] = field(default_factory=list)
    judge_attempts: int = 0
    judge_cached: bool = False


@dataclass
class _RunStats:
    generated: int = 0
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    cached: int = 0
    judge_retries: int = 0
    judge_cached: int = 0


@dataclass(frozen=True)
class _Before:
    """What the output folder held when the run started."""

    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    done: set[tuple[str, int]] = field(default_factory=set)
    """(source id, sample) of every result there."""


_SUMMED = (
    "requests",
    "retries",
    "cached",
    "prompt_tokens",
    "completion_tokens",
    "judge_requests",
    "judge_retries",
    "judge_prompt_tokens",
    "judge_completion_tokens",
)
"""The figures of a run the manifest's ``totals`` add up over runs."""


@dataclass(frozen=True)
class DistillResult:
    output: Path
    manifest: dict[str, Any]


class Distiller:
    """One distillation into one output folder; :meth:`run` does it all."""

    def __init__(self, settings: DistillSettings, source: SourceInput, output: Path):
        self.settings, self.source, self.output = settings, source, output.resolve()
        self.teacher = settings.teacher
        self.prompt_sha256 = template_hash(settings.template)
        self._breaker = CircuitBreaker(self.teacher.max_consecutive_failures, f"teacher {self.teacher.base_url}")
        self._client = ChatClient(self.teacher.server(), breaker=self._breaker)
        judge = settings.judge_config()
        self._judge_config = judge
        self._judge: ChatClient | None = None
        if judge is not None:
            same = settings.teacher_judges
            breaker = (
                self._breaker
                if same
                else CircuitBreaker(self.teacher.max_consecutive_failures, f"judge {judge.base_url}")
            )
            server = Server(
                judge.base_url,
                judge.model,
                judge.api_key_env,
                judge.timeout_s,
                judge.max_attempts,
                judge.backoff_s,
                judge.temperature,
            )
            self._judge = ChatClient(server, breaker=breaker)
        self._before = _Before()
        path = cache_root() / "distill-cache.sqlite"
        self._replies = ReplyCache(path, "teacher_replies") if settings.cache else None
        # Verdict texts, re-parsed on every read ("agreement_verdicts" of earlier versions held parsed booleans).
        self._verdicts = ReplyCache(path, "agreement_replies") if settings.cache else None

    # -- one chain --

    def _ask_teacher(self, picked: Picked, sample: int, result: _Result) -> None:
        messages, keyed = request_messages(picked.question, self.settings.template)
        t = self.teacher
        key = ReplyCache.key(CACHE_VERSION, t.model, keyed, t.temperature, t.max_tokens, sample)
        if self._replies is not None and (hit := self._replies.get(key, Completion.valid_json)) is not None:
            result.completion, result.cached = Completion.from_json(hit), True
            return
        outcome = self._client.chat(messages, lambda c: c, max_tokens=t.max_tokens, temperature=t.temperature)
        result.attempts, result.errors = outcome.attempts, outcome.errors
        if outcome.value is None:
            result.failed = "teacher"
            return
        result.completion = outcome.value
        if self._replies is not None:
            self._replies.put(key, outcome.value.to_json())

    def _agrees(self, picked: Picked, answer: str, result: _Result) -> bool | None:
        assert self._judge is not None and self._judge_config is not None
        prompt = agreement_prompt(picked.question.text, picked.question.reference, answer)
        key = ReplyCache.key(AGREEMENT_VERSION, self._judge_config.model, prompt)
        outcome = self._judge.ask(AGREEMENT_SYSTEM, prompt, parse_agreement, self._verdicts, key)
        result.judge_attempts, result.judge_cached = outcome.attempts, outcome.cached
        if outcome.value is None:
            result.errors += outcome.errors
            return None
        return outcome.value

    def _one(self, picked: Picked, sample: int) -> _Result:
        """Ask, check, verify one chain (in a worker thread). Raises CircuitOpen when the breaker is open."""
        result = _Result(picked, sample)
        self._ask_teacher(picked, sample, result)
        if result.completion is None:
            return result
        result.check = check_reply(result.completion, self.settings.min_reasoning_chars)
        if result.check.reason:
            result.reason, result.detail = result.check.reason, result.check.detail
            return result
        if picked.kind == "mcq":
            result.reason, result.detail, result.verdict = verify_choice(picked.question, result.check.answer)
            return result
        agrees = self._agrees(picked, result.check.answer, result)
        if agrees is None:
            result.failed = "judge"
            return result
        assert self._judge_config is not None
        method = "teacher" if self.settings.teacher_judges else "judge"
        result.verdict = {"method": method, "judge": self._judge_config.model, "agrees": agrees}
        if not agrees:
            result.reason = "disagrees with reference"
            result.detail = "the judge found the final answer at odds with the reference"
        return result

    # -- records --

    def _images(self, entries: list[Any]) -> list[Any]:
        """The item's image entries for the chains file: pointers as they are (they resolve under the datasets root
        of the chains' source entry), paths made relative to the output folder (the chains' own default image root),
        so the file reads wherever the output folder and the images move together."""
        files = readers.FileCheck(self.source.image_root, check=False)
        return [
            os.path.relpath(files.path(entry), self.output) if isinstance(entry, str) else entry for entry in entries
        ]

    def _chain(self, result: _Result) -> dict[str, Any]:
        picked, record = result.picked, result.picked.record
        provenance = dict(record.provenance)
        source_file, source_line = provenance.pop("file", None), provenance.pop("line", None)
        raw_messages = [{"role": m["role"], "content": m["content"]} for m in picked.raw["messages"]]
        if raw_messages and raw_messages[-1]["role"] == "assistant":
            raw_messages.pop()
        item: dict[str, Any] = {
            "id": chain_id(record.id, result.sample),
            "language": record.language,
            "category": record.category,
            **({"subspecialty": record.subspecialty} if record.subspecialty else {}),
            "task": "reasoning",
            "messages": [*raw_messages, {"role": "assistant", "content": result.check.answer}],
            "images": self._images(list(picked.raw.get("images") or [])),
            "reasoning": result.check.reasoning,
            "provenance": {
                **provenance,
                **self._key_fields(result),
                "source_file": source_file,
                "source_line": source_line,
                "verdict": result.verdict,
            },
        }
        return item

    def _key_fields(self, result: _Result) -> dict[str, Any]:
        return {
            "source_id": result.picked.record.id,
            "sample": result.sample,
            "prompt_sha256": self.prompt_sha256,
            "teacher": self.teacher.model,
        }

    def _rejection(self, result: _Result) -> dict[str, Any]:
        record = result.picked.record
        assert result.completion is not None
        return {
            "id": chain_id(record.id, result.sample),
            **self._key_fields(result),
            "source_file": record.provenance.get("file"),
            "source_line": record.provenance.get("line"),
            "reason": result.reason,
            "detail": result.detail,
            "verdict": result.verdict,
            "reply": result.completion.to_json(),
        }

    # -- the whole run --

    def _check_output(self, lines: list[tuple[str, dict[str, Any]]]) -> set[Key]:
        done: set[Key] = set()
        for where, line in lines:
            key = _key_of(line, where)
            if key[2:] != (self.prompt_sha256, self.teacher.model):
                raise DistillError(
                    f"{self.output} holds results of teacher {key[3]!r} with prompt sha256 {key[2][:12]}, this run "
                    f"is teacher {self.teacher.model!r} with prompt {self.prompt_sha256[:12]}: their chain ids would "
                    "collide (ids are source id + sample); give another --output-dir"
                )
            done.add(key)
        return done

    def run(self) -> DistillResult:
        started = time.monotonic()
        selected = select(self.source, self.settings.selection, self.settings.on_error)
        open_items = [p for p in selected.items if p.kind == "open"]
        if open_items and self._judge is None:
            tasks = sorted({p.record.task for p in open_items})
            raise DistillError(
                f"{len(open_items)} open-ended item(s) selected ({', '.join(tasks)}) and nothing to check their "
                "answers against the references: open-ended chains are never kept unverified. Give a judge "
                "(--judge-url and --judge-model), let the teacher judge (--teacher-judges), or select --task mcq"
            )
        self.output.mkdir(parents=True, exist_ok=True)
        chains, rejected = _Journal(self.output / CHAINS), _Journal(self.output / REJECTED)
        previous = self._previous_totals()
        try:
            done = self._check_output(
                [(f"{chains.path}:{i + 1}", line) for i, line in enumerate(chains.lines)]
                + [(f"{rejected.path}:{i + 1}", line) for i, line in enumerate(rejected.lines)]
            )
            self._before = _Before(
                kept=len(chains.lines),
                rejected=Counter(str(line.get("reason")) for line in rejected.lines),
                done={key[:2] for key in done},
            )
            chains.lines.clear()  # read once for the keys and counts above; not kept for the run
            rejected.lines.clear()
            samples = self.teacher.samples
            todo = [
                (picked, s)
                for picked in selected.items
                for s in range(samples)
                if (picked.record.id, s, self.prompt_sha256, self.teacher.model) not in done
            ]
            wanted = len(selected.items) * samples
            logger.info(
                f"{len(selected.items)} item(s) selected of {selected.qualifying} qualifying ({selected.read} read); "
                f"{samples} sample(s) each: {wanted} chain(s), {wanted - len(todo)} already in {self.output}, "
                f"{len(todo)} to ask {self.teacher.model}"
            )
            stats = _RunStats()
            stopped = self._loop(todo, chains, rejected, stats, selected, started, previous)
        finally:
            chains.close()
            rejected.close()
        manifest = self._write_manifest(selected, stats, started, previous, stopped)
        self._close_clients()
        for cache in (self._replies, self._verdicts):
            if cache is not None:
                cache.close()
        if stopped:
            counts = manifest["counts"]
            raise DistillStopped(
                f"distillation stopped: {stopped}. Everything done is kept in {self.output} ({counts['kept']} "
                f"kept, {counts['generated'] - counts['kept']} rejected); {counts['pending']} chain(s) not yet "
                "distilled: run the same command again to continue"
            )
        failed = sum(stats.failed.values())
        if failed:
            logger.warning(
                f"{failed} chain(s) got no verdict ({dict(stats.failed)}; see the log above): run the same command "
                "again to retry them"
            )
        return DistillResult(self.output, manifest)

    def _loop(
        self,
        todo: list[tuple[Picked, int]],
        chains: _Journal,
        rejected: _Journal,
        stats: _RunStats,
        selected: Selected,
        started: float,
        previous: dict[str, Any],
    ) -> str | None:
        """Ask with at most ``concurrency`` chains in flight (started as others finish, so a stop leaves no queue
        behind); each result is appended the moment it arrives. Returns why the run stopped early, or None.

        Each chain is asked in a daemon thread of its own rather than in a ThreadPoolExecutor: the executor's workers
        are joined at interpreter exit, so an interrupted run would sit until every abandoned request reached its
        deadline (minutes for a long chain); abandoned requests are simply asked again by the next run."""
        progress = Progress(f"distilling with {self.teacher.model}", len(todo), unit="chains", log=logger)
        jobs = iter(todo)
        arrived: queue.Queue[tuple[_Result | None, BaseException | None]] = queue.Queue()
        in_flight = 0
        stopped: str | None = None
        last_manifest = time.monotonic()

        def work(picked: Picked, sample: int) -> None:
            try:
                arrived.put((self._one(picked, sample), None))
            except BaseException as exc:  # handed to the main thread, which decides
                arrived.put((None, exc))

        try:
            while True:
                while stopped is None and in_flight < self.teacher.concurrency:
                    job = next(jobs, None)
                    if job is None:
                        break
                    threading.Thread(target=work, args=job, name="distill", daemon=True).start()
                    in_flight += 1
                if not in_flight:
                    break
                result, error = arrived.get()
                in_flight -= 1
                if isinstance(error, CircuitOpen):
                    stopped = stopped or str(error)
                elif error is not None:
                    raise error
                elif result is not None:
                    self._record(result, chains, rejected, stats)
                    progress.advance()
                breaker = self._breaker.reason or (
                    self._judge.breaker.reason if self._judge and self._judge.breaker else None
                )
                if breaker and stopped is None:
                    stopped = breaker
                    waiting = f"; waiting for the {in_flight} request(s) in flight" if in_flight else ""
                    logger.error(f"{breaker}: stopping{waiting}")
                if time.monotonic() - last_manifest > MANIFEST_EVERY_S:
                    self._write_manifest(selected, stats, started, previous, None)
                    last_manifest = time.monotonic()
        except KeyboardInterrupt:
            stopped = "interrupted"
            # Requests in flight are abandoned: no retry of theirs starts; their chains are asked again later.
            self._breaker.trip(stopped)
            if self._judge is not None and self._judge.breaker is not None:
                self._judge.breaker.trip(stopped)
            self._write_manifest(selected, stats, started, previous, stopped)
            raise
        finally:
            progress.close()
        return stopped

    def _close_clients(self) -> None:
        self._client.close()
        if self._judge is not None:
            self._judge.close()

    def _record(self, result: _Result, chains: _Journal, rejected: _Journal, stats: _RunStats) -> None:
        if not result.cached:
            stats.retries += max(0, result.attempts - 1)
        else:
            stats.cached += 1
        stats.judge_retries += max(0, result.judge_attempts - 1)
        stats.judge_cached += result.judge_cached
        if result.failed:
            stats.failed[result.failed] += 1
            logger.warning(
                f"{result.picked.record.id} sample {result.sample}: the {result.failed} gave no usable reply "
                f"({'; '.join(result.errors[-3:]) or 'no reply'})"
            )
            return
        stats.generated += 1
        if result.reason is None:
            chains.append(self._chain(result))
            stats.kept += 1
        else:
            rejected.append(self._rejection(result))
            stats.rejected[result.reason] += 1

    # -- manifest --

    def _previous_totals(self) -> dict[str, Any]:
        path = self.output / MANIFEST
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
            totals = previous.get("totals")
            return dict(totals) if isinstance(totals, dict) and previous.get("format") == FORMAT else {}
        except (OSError, ValueError):
            return {}

    def _write_manifest(
        self,
        selected: Selected,
        stats: _RunStats,
        started: float,
        previous: dict[str, Any],
        stopped: str | None,
    ) -> dict[str, Any]:
        wall = time.monotonic() - started
        before = self._before
        kept = before.kept + stats.kept
        reasons = before.rejected + stats.rejected
        generated = kept + sum(reasons.values())
        wanted_keys = {(p.record.id, s) for p in selected.items for s in range(self.teacher.samples)}
        # Every result of this run is one of this selection's chains, never one done before it.
        done_now = len(wanted_keys & before.done) + stats.generated
        wanted = len(wanted_keys)
        judge = self._judge
        run = {
            "generated": stats.generated,
            "kept": stats.kept,
            "rejected": reason_counts(list(stats.rejected.elements())),
            "failed": dict(stats.failed),
            "requests": self._client.requests_sent,
            "retries": stats.retries,
            "cached": stats.cached,
            "prompt_tokens": self._client.prompt_tokens,
            "completion_tokens": self._client.completion_tokens,
            "judge_requests": judge.requests_sent if judge else 0,
            "judge_retries": stats.judge_retries,
            "judge_cached": stats.judge_cached,
            "judge_prompt_tokens": judge.prompt_tokens if judge else 0,
            "judge_completion_tokens": judge.completion_tokens if judge else 0,
            "wall_s": round(wall, 1),
            "stopped": stopped,
        }
        totals = {k: previous.get(k, 0) + v for k, v in run.items() if k in _SUMMED}
        totals["wall_s"] = round(previous.get("wall_s", 0) + wall, 1)
        totals["runs"] = previous.get("runs", 0) + 1
        judge_config = self._judge_config
        manifest = {
            "format": FORMAT,
            "source": {
                "name": self.source.label,
                "path": str(self.source.path),
                "image_root": str(self.source.image_root),
            },
            "selection": {**self.settings.selection.model_dump(mode="json", exclude_none=True), **selected.to_json()},
            "teacher": self.teacher.model_dump(mode="json"),
            "judge": None
            if judge_config is None
            else {
                "method": "teacher" if self.settings.teacher_judges else "judge",
                "base_url": judge_config.base_url,
                "model": judge_config.model,
            },
            "prompt": {"sha256": self.prompt_sha256, "file": self.settings.template_file},
            "min_reasoning_chars": self.settings.min_reasoning_chars,
            "counts": {
                "selected": len(selected.items),
                "samples": self.teacher.samples,
                "wanted": wanted,
                "done": done_now,
                "pending": wanted - done_now,
                "generated": generated,
                "kept": kept,
                "rejected": reason_counts(list(reasons.elements())),
            },
            "this_run": run,
            "totals": totals,
            "files": {"chains": CHAINS, "rejected": REJECTED},
        }
        write_json_atomic(self.output / MANIFEST, manifest)
        return manifest


def distill(settings: DistillSettings, source: SourceInput, output: Path) -> DistillResult:
    """Distil chains for ``source``'s selected items into ``output`` (resuming whatever is there)."""
    return Distiller(settings, source, output).run()
