"""Exact token counts of training rows, and what they mean for a stage: over-length records and optimizer steps.

Text goes through the model's own tokenizer and chat template, with each ``<image>`` as Qwen2.5-VL's
``<|vision_start|><|image_pad|><|vision_end|>``; each image then costs its real visual token count from the
model's resize rule (SPEC §6) applied to the size in the image *header* (no pixel is decoded): both sides rounded
to multiples of 28 with the area brought into [min_pixels, max_pixels], (H/28)·(W/28) tokens.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, overload

import imagesize
from PIL import Image

from spinegpt import stopping
from spinegpt.data_mixes.bpe import BpeCounts, NotEquivalent
from spinegpt.data_mixes.readers import byte_ranges, data_workers
from spinegpt.data_mixes.rows import IMAGE_TAG, loads
from spinegpt.files import sha256_file, write_json_atomic
from spinegpt.paths import cache_root
from spinegpt.progress import Progress

logger = logging.getLogger(__name__)

FACTOR = 28
VISION_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 28 * 28 * 16384


def resized(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = FACTOR) -> tuple[int, int]:
    """Qwen2.5-VL's resize: sides to multiples of ``factor``, area into [min_pixels, max_pixels], aspect kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio of a {width}x{height} image is above 200, which Qwen2.5-VL rejects")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header. PNG and JPEG through imagesize (a few reads at known offsets,
    ~4x faster than Pillow's plugin detection, which was a third of counting a stage); anything else, or a header
    imagesize cannot read, through Pillow."""
    if str(path).lower().endswith((".png", ".jpg", ".jpeg")):
        try:
            width, height = imagesize.get(path)
        except (OSError, ValueError):
            width = height = -1  # Pillow then reads it, or says what is wrong with it
        if width > 0 and height > 0:
            return int(width), int(height)
    with Image.open(path) as image:  # reads the header only
        return image.size


def image_tokens(path: str | Path, min_pixels: int, max_pixels: int) -> int:
    width, height = image_size(path)
    h, w = resized(height, width, min_pixels, max_pixels)
    return (h // FACTOR) * (w // FACTOR)


@dataclass(frozen=True)
class Framing:
    """What a chat template puts around each message, learnt once from the template itself: a row's templated text
    is then plain string joins, and many rows are tokenized together by the fast (Rust) tokenizer."""

    prefix: dict[str, str]
    suffix: str
    default_system: str
    """Rendered before the first message when the conversation has no system message ('' for templates without)."""

    def render(self, messages: list[dict[str, str]]) -> str:
        head = "" if messages and messages[0]["role"] == "system" else self.default_system
        return head + "".join(self.prefix[m["role"]] + m["content"] + self.suffix for m in messages)

    def pieces(self, messages: list[dict[str, str]]) -> tuple[list[str], list[str]]:
        """The rendered text cut at every answer: ``(others, answers)`` with ``len(others) == len(answers) + 1``;
        interleaved (``others[0] + answers[0] + others[1] + ...``) they are :meth:`render`'s text."""
        others: list[str] = []
        answers: list[str] = []
        current = "" if messages and messages[0]["role"] == "system" else self.default_system
        for m in messages:
            current += self.prefix[m["role"]]
            if m["role"] == "assistant":
                others.append(current)
                answers.append(m["content"])
                current = self.suffix
            else:
                current += m["content"] + self.suffix
        others.append(current)
        return others, answers


_PROBE = "\x00{}\x00"


def learn_framing(tokenizer: Any) -> Framing | None:
    """The template's per-message framing, or None when it is not of that shape (then every row is rendered by the
    template itself: exact, only slower). Checked against the template on probe conversations."""

    def render(messages: list[dict[str, str]]) -> str:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))

    try:
        s, u, a = (_PROBE.format(r) for r in ("S", "U", "A"))
        full = render(
            [{"role": "system", "content": s}, {"role": "user", "content": u}, {"role": "assistant", "content": a}]
        )
        bare = render([{"role": "user", "content": u}, {"role": "assistant", "content": a}])
        head, rest = full.split(s)
        between_su, rest = rest.split(u)
        between_ua, suffix = rest.split(a)
        if not (between_su.startswith(suffix) and between_ua.startswith(suffix)):
            return None
        prefix = {"system": head, "user": between_su[len(suffix) :], "assistant": between_ua[len(suffix) :]}
        framing = Framing(prefix, suffix, bare.split(prefix["user"] + u)[0] if prefix["user"] else "")
        probes = [
            [
                {"role": "user", "content": "x\n"},
                {"role": "assistant", "content": "y"},
                {"role": "user", "content": "z"},
                {"role": "assistant", "content": VISION_PLACEHOLDER + "w"},
            ],
            [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": ""},
            ],
        ]
    except (ValueError, TypeError, KeyError):
        return None
    return framing if all(framing.render(p) == render(p) for p in probes) else None


def _converted(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"].replace(IMAGE_TAG, VISION_PLACEHOLDER)} for m in messages]


def _with_images(text_counts: list[int], rows: Sequence[Mapping[str, Any]], image: Callable[[str], int]) -> list[int]:
    # Each placeholder already holds one <|image_pad|>; the processor expands it to the image's token count.
    return [n + sum(image(p) - 1 for p in r.get("images") or []) for n, r in zip(text_counts, rows, strict=True)]


@dataclass
class RowCounts:
    """What the audit knows of each row of a file, in file order: what training will cost is computed from these
    (``spinegpt plan --cost``), the over-length policy from ``lengths``."""

    lengths: list[int] = field(default_factory=list)
    """Tokens of the row as the engine sees it: chat-templated text plus every image's visual tokens."""
    images: list[list[int]] = field(default_factory=list)
    """Visual tokens of each of the row's images (the vision tower's attention grows with each image's square)."""
    trained: list[int] | None = field(default_factory=list)
    """Tokens the loss is computed on: each answer and the end-of-turn suffix after it, as ms-swift's template
    labels them (the answer tokenized on its own, its visual tokens excluded). None when the chat template's
    per-message framing could not be learnt (then each row is rendered whole and answers are not told apart)."""

    @property
    def image_tokens(self) -> list[int]:
        return [sum(row) for row in self.images]

    def extend(self, other: RowCounts) -> None:
        self.lengths += other.lengths
        self.images += other.images
        self.trained = None if self.trained is None or other.trained is None else self.trained + other.trained

    def to_json(self) -> dict[str, Any]:
        return {"lengths": self.lengths, "images": self.images, "trained": self.trained}

    @classmethod
    def from_json(cls, data: Any, rows: int) -> RowCounts:
        """Read back from the cache, checked as a fresh count would be: one entry per row of the file, every count a
        non-negative integer, no row training on more tokens than it has. Anything else is a ValueError naming
        the fault (the entry is then discarded and the file counted again)."""
        if not isinstance(data, dict) or not {"lengths", "images", "trained"} <= data.keys():
            raise ValueError("not a row-count entry")
        lengths, images, trained = data["lengths"], data["images"], data["trained"]
        if not (isinstance(lengths, list) and isinstance(images, list) and isinstance(trained, list | None)):
            raise ValueError("not a row-count entry")
        if len(lengths) != rows or len(images) != rows or (trained is not None and len(trained) != rows):
            raise ValueError(f"counts for {len(lengths)} rows, the file has {rows}")
        if not all(_count(n) for n in lengths):
            raise ValueError("a row length is not a non-negative integer")
        if not all(isinstance(row, list) and all(_count(n) for n in row) for row in images):
            raise ValueError("an image's tokens are not a list of non-negative integers")
        if trained is not None and not all(_count(t) and t <= n for t, n in zip(trained, lengths, strict=True)):
            raise ValueError("a row's trained tokens are not an integer within its length")
        return cls(lengths, images, trained)


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0  # bool is an int subclass: `True` is no count


@dataclass
class ImageCosts:
    """Each image's tokens beyond its placeholder, from its header, remembered by path."""

    min_pixels: int
    max_pixels: int
    known: dict[str, int] = field(default_factory=dict)

    def __call__(self, path: str) -> int:
        if path not in self.known:
            self.known[path] = image_tokens(path, self.min_pixels, self.max_pixels)
        return self.known[path]


@dataclass
class FastRows:
    """Counts rows without the tokenizer object: the template's framing joined around the texts, tiktoken's BPE
    with the tokenizer's own ranks (:mod:`bpe`), the image rule. Plain data, so the processes counting the parts of
    a big file get this rather than a ``transformers`` tokenizer (and do not import transformers)."""

    framing: Framing
    bpe: BpeCounts
    image: ImageCosts

    def count_many(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        return self.count_rows(rows).lengths

    def count_rows(self, rows: Sequence[Mapping[str, Any]]) -> RowCounts:
        """Lengths, image tokens and trained tokens of many rows from one encoding of their text: each row is
        encoded in pieces cut at its answers (the answers' counts are the trained tokens: ms-swift tokenizes each
        answer on its own), and its length is the pieces' sum wherever :meth:`BpeCounts.joiner` proves the sum
        equals the whole text's count; elsewhere (rare: an answer opening with a blank line) the whole text is
        counted too."""
        framing, bpe = self.framing, self.bpe
        joins = self._joins
        texts: list[str] = []
        starts: list[int] = []
        answers_of: list[list[str]] = []
        unclean: list[int] = []
        for k, row in enumerate(rows):
            others, answers = framing.pieces(_converted(row["messages"]))
            starts.append(len(texts))
            for other, answer in zip(others, answers, strict=False):
                texts += [other, answer]
                if not joins.clean(other, answer):
                    unclean.append(k)
            texts.append(others[-1])
            answers_of.append(answers)
        starts.append(len(texts))
        found = bpe.count(texts)
        renders = [framing.render(_converted(rows[k]["messages"])) for k in dict.fromkeys(unclean)]
        whole = dict(zip(dict.fromkeys(unclean), bpe.count(renders), strict=True))
        text_counts, trained = [], []
        for k, answers in enumerate(answers_of):
            start, stop = starts[k], starts[k + 1]
            text_counts.append(whole[k] if k in whole else sum(found[start:stop]))
            placeholders = sum(a.count(VISION_PLACEHOLDER) for a in answers)
            trained.append(
                sum(found[start + 1 : stop : 2]) + joins.suffix_tokens * len(answers) - placeholders * joins.placeholder
            )
        if not joins.suffix_apart:  # a suffix that does not open with an added token: count answer + suffix
            trained = [
                sum(bpe.count([a + framing.suffix for a in answers]))
                - sum(a.count(VISION_PLACEHOLDER) for a in answers) * joins.placeholder
                for answers in answers_of
            ]
        return RowCounts(
            _with_images(text_counts, rows, self.image),
            [[self.image(p) for p in r.get("images") or []] for r in rows],
            trained,
        )

    @functools.cached_property
    def _joins(self) -> _Joins:
        return _Joins(self.framing, self.bpe)

    def __getstate__(self) -> dict[str, Any]:  # sent to worker processes: the cached helpers are rebuilt there
        return {"framing": self.framing, "bpe": self.bpe, "image": self.image}


class _Joins:
    """Where a row's pieces meet, decided once per framing: before an answer (the assistant prefix's tail) and
    after it (the suffix), and the tokens the trained total adds per answer."""

    def __init__(self, framing: Framing, bpe: BpeCounts):
        self.bpe = bpe
        prefix = framing.prefix["assistant"]
        # The prefix's own tail decides the join when the prefix holds an added token; else the text before it does.
        self.fixed = bpe.joiner(prefix) if any(token in prefix for token in bpe.added) else None
        self.suffix = framing.suffix
        # An answer meets the suffix cleanly when the suffix opens with an added token that no other added token
        # could overlap from the answer's side.
        overlapping = [t for t in bpe.added for k in range(1, len(t)) if self.suffix.startswith(t[k:])]
        self.suffix_apart = self.suffix == "" or (self.suffix.startswith(bpe.added) and not overlapping)
        self.suffix_tokens = bpe.count([self.suffix])[0]
        self.placeholder = bpe.count([VISION_PLACEHOLDER])[0]

    def clean(self, before: str, answer: str) -> bool:
        """Both joins of ``answer`` (after ``before``, before the suffix) are certain to split the tokens."""
        joins_before = self.fixed or self.bpe.joiner(before)
        return joins_before(answer) and (self.suffix_apart or self.bpe.joins_cleanly(answer, self.suffix))


class TokenCounter:
    """Token counts for engine rows with one model's tokenizer and one stage's pixel limits.

    Three ways to the same numbers, fastest first: :class:`FastRows` where the tokenizer is byte-level BPE that
    tiktoken provably reproduces (Qwen's is); the template's framing plus one batch through the tokenizer; the
    chat template per row (the reference, used when the template's framing cannot be learnt)."""

    def __init__(self, tokenizer: Any, min_pixels: int, max_pixels: int):
        self.tokenizer, self.min_pixels, self.max_pixels = tokenizer, min_pixels, max_pixels
        self.image = ImageCosts(min_pixels, max_pixels)
        self.framing = learn_framing(tokenizer)
        self.fast: FastRows | None = None
        self.why_not_fast = "the chat template's per-message framing could not be learnt"
        if self.framing is not None:
            try:
                self.fast = FastRows(self.framing, BpeCounts.from_tokenizer(tokenizer), self.image)
            except NotEquivalent as reason:
                self.why_not_fast = str(reason)

    def text_tokens(self, messages: list[dict[str, str]]) -> int:
        """The per-row reference: the chat template applied to one conversation and tokenized."""
        ids = self.tokenizer.apply_chat_template(_converted(messages), tokenize=True, add_generation_prompt=False)
        if isinstance(ids, Mapping):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return len(ids)

    def count_many(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Tokens of many engine rows at once, exactly what :meth:`count` gives each."""
        return self.count_rows(rows).lengths

    def count_rows(self, rows: Sequence[Mapping[str, Any]]) -> RowCounts:
        """Lengths, per-image visual tokens and trained tokens of many rows (lengths exactly what :meth:`count`
        gives each, trained tokens what :meth:`trained_tokens` gives each)."""
        if self.fast is not None:
            return self.fast.count_rows(rows)
        images = [[self.image(p) for p in r.get("images") or []] for r in rows]
        if self.framing is None:
            text_counts = [self.text_tokens(r["messages"]) for r in rows]
            return RowCounts(_with_images(text_counts, rows, self.image), images, None)
        framing = self.framing
        texts = [framing.render(_converted(r["messages"])) for r in rows]
        text_counts = [len(ids) for ids in self._encode(texts)]
        return RowCounts(_with_images(text_counts, rows, self.image), images, self._answer_tokens(framing, rows))

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return list(self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"])

    def trained_tokens(self, row: Mapping[str, Any]) -> int | None:
        """Tokens of one row that the loss is computed on, as ms-swift's template labels a ChatML row (the
        reference): every answer tokenized on its own followed by the template's end-of-turn suffix, without the
        visual tokens of an image inside an answer. None when the template's framing is unknown."""
        return None if self.framing is None else self._answer_tokens(self.framing, [row])[0]

    def _answer_tokens(self, framing: Framing, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Trained tokens of each row, all their answers tokenized in one batch."""
        answers = [[m["content"] for m in _converted(r["messages"]) if m["role"] == "assistant"] for r in rows]
        counted = iter(self._encode([VISION_PLACEHOLDER, *(a + framing.suffix for row in answers for a in row)]))
        placeholder = len(next(counted))
        return [sum(len(next(counted)) - a.count(VISION_PLACEHOLDER) * placeholder for a in row) for row in answers]

    def count(self, row: Mapping[str, Any]) -> int:
        """Tokens of one engine row: chat-templated text plus every image's visual tokens (the reference)."""
        images = row.get("images") or []
        return self.text_tokens(row["messages"]) + sum(self.image(p) - 1 for p in images)

    @functools.cached_property
    def fingerprint(self) -> str:
        """What decides the counts besides the rows: the tokenizer (vocabulary, merges, special tokens), its chat
        template and the pixel limits. Computed once per counter: the serialised vocabulary is megabytes."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        vocabulary = backend.to_str() if backend is not None else json.dumps(self.tokenizer.get_vocab(), sort_keys=True)
        parts = [COUNT_VERSION, vocabulary, str(self.tokenizer.chat_template), self.min_pixels, self.max_pixels]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def pixel_limits(env: Mapping[str, str], model_dir: Path | None) -> tuple[int, int]:
    """The stage's min/max pixels: ``MIN_PIXELS`` / ``MAX_PIXELS`` (as ms-swift reads them), else the model's
    preprocessor config, else Qwen2.5-VL's defaults."""
    config: dict[str, Any] = {}
    if model_dir is not None and (model_dir / "preprocessor_config.json").is_file():
        config = json.loads((model_dir / "preprocessor_config.json").read_text())
    size = config.get("size") or {}
    low = int(env.get("MIN_PIXELS") or config.get("min_pixels") or size.get("shortest_edge") or DEFAULT_MIN_PIXELS)
    high = int(env.get("MAX_PIXELS") or config.get("max_pixels") or size.get("longest_edge") or DEFAULT_MAX_PIXELS)
    return low, high


@dataclass
class StageAudit:
    stage: str
    records: int
    total_tokens: int
    percentiles: dict[str, int]
    max_length: int
    over_max_length: int
    global_batch: int
    optimizer_steps: int
    min_pixels: int
    max_pixels: int
    over_length_rows: list[str] = field(default_factory=list)
    """``file:line`` of the first over-length rows."""
    trained_tokens: int | None = None
    """Tokens the loss is computed on (answers and their end-of-turn tokens); None when not known."""
    images: int = 0
    image_tokens: int = 0
    """Visual tokens of all images (included in ``total_tokens``)."""
    rows: RowCounts | None = field(default=None, repr=False, compare=False)
    """Every row's counts, in file order (what the cost model needs; not part of the JSON)."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "rows"}


def percentiles(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> int:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1]}


COUNT_VERSION = 2
"""Bumped whenever what is cached changes (2: per-image visual tokens and trained tokens beside the lengths)."""
BATCH = 2048
PARALLEL_MIN_BYTES = 32 << 20
"""Prepared files at least this big are counted by several processes (a paper-scale stage 1 is ~1 GB)."""
PROGRESS_MIN_BYTES = 16 << 20


def origins_of(prepared: Path) -> Path:
    """Beside a prepared file: for each of its lines, the ``file:line`` it came from (errors name the source)."""
    return prepared.with_name(prepared.stem + ".origins")


def origin_lines(origins: Path) -> Iterator[str]:
    """The recorded ``file:line`` of each prepared row, in order (nothing when the file was prepared elsewhere)."""
    if origins.is_file():
        with origins.open(encoding="utf-8") as handle:
            yield from (line.rstrip("\n") for line in handle)


@overload
def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]: ...


@overload
def _rows(path: Path, keep: Callable[[int], bool]) -> Iterator[tuple[int, dict[str, Any] | None]]: ...


def _rows(path: Path, keep: Callable[[int], bool] | None = None) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(line, row)`` of each row of a JSONL file; with ``keep``, rows whose 0-based index it refuses come as
    None, unparsed (a spot check of 200 rows need not parse 700k)."""
    with path.open("rb") as handle:
        index = 0
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield number, loads(line) if keep is None or keep(index) else None
                index += 1


def _count_rows(path: Path, rows: FastRows | TokenCounter, byte_range: tuple[int, int] | None, label: str) -> RowCounts:
    """Counts of every row of ``path`` (or of one part of it), in batches, with progress on big files."""
    start, end = byte_range or (0, path.stat().st_size)
    progress = (
        Progress(label, max(1, (end - start) >> 20), unit="MiB", log=logger)
        if end - start >= PROGRESS_MIN_BYTES
        else None
    )
    # Trained tokens are known wherever the template's framing is (always on the fast path).
    found = RowCounts(trained=None if isinstance(rows, TokenCounter) and rows.framing is None else [])
    batch: list[dict[str, Any]] = []
    shown = start
    with path.open("rb") as handle:
        handle.seek(start)
        while handle.tell() < end:
            line = handle.readline()
            if line.strip():
                batch.append(loads(line))
            if len(batch) == BATCH or (batch and handle.tell() >= end):
                found.extend(rows.count_rows(batch))
                batch = []
                if progress is not None and handle.tell() - shown >= 1 << 20:
                    progress.advance((handle.tell() - shown) >> 20)
                    shown += (handle.tell() - shown) >> 20 << 20
    if progress is not None:
        progress.close()
    return found


def counts(path: Path, counter: TokenCounter, workers: int | None = None) -> list[int]:
    """Every row's token count (see :func:`row_counts`)."""
    return row_counts(path, counter, workers).lengths


def row_counts(path: Path, counter: TokenCounter, workers: int | None = None) -> RowCounts:
    """Every row's tokens, per-image visual tokens and trained tokens, or read back from the cache: keyed by the
    file's content and the counter's fingerprint, so a second audit, plan --audit, plan --cost or --resume over
    the same build takes seconds.

    A big file is counted in parts by ``workers`` processes (default: ``$SPINEGPT_DATA_WORKERS``, else the CPUs);
    the fast counts are then checked against the tokenizer itself on a spread sample of rows."""
    key = hashlib.sha256(f"{sha256_file(path)}:{counter.fingerprint}".encode()).hexdigest()
    cached = cache_root() / "token-counts" / key[:2] / f"{key}.json"
    if cached.is_file():
        try:
            return RowCounts.from_json(json.loads(cached.read_text()), _rows_in(path))
        except (OSError, ValueError) as exc:
            logger.warning(f"token-count cache {cached}: {exc}; discarded, {path.name} counted again")
    workers = workers or data_workers()
    label = f"counting tokens of {path.name}"
    if counter.fast is not None and workers > 1 and path.stat().st_size >= PARALLEL_MIN_BYTES:
        ranges = byte_ranges(path, workers)
        with stopping.process_pool(len(ranges)) as pool:
            labels = [f"{label} [part {k + 1}/{len(ranges)}]" for k in range(len(ranges))]
            found = RowCounts()
            for part in pool.map(_count_rows, [path] * len(ranges), [counter.fast] * len(ranges), ranges, labels):
                found.extend(part)
    else:
        found = _count_rows(path, counter, None, label)
    if counter.fast is not None and not _agrees_with_tokenizer(path, counter, found):
        counter.fast = None
        found = _count_rows(path, counter, None, label)
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cached, found.to_json())
    return found


def _rows_in(path: Path) -> int:
    """The rows of an engine JSONL file as the counters see them: its non-blank lines."""
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


SPOT_CHECKS = 200


def _agrees_with_tokenizer(path: Path, counter: TokenCounter, found: RowCounts) -> bool:
    """The fast counts of a spread sample of rows against the per-row reference. :mod:`bpe` proves the two
    tokenizations equal except for one thing it cannot prove, the regex engines' reading of the split pattern
    (tiktoken's and the tokenizer's are different libraries), so a sample is counted both ways, its lengths and
    its trained tokens; any difference turns the fast path off for the file, which is then counted again by the
    tokenizer."""
    step = max(1, len(found.lengths) // SPOT_CHECKS)
    for index, (number, row) in enumerate(_rows(path, keep=lambda index: index % step == 0)):
        if row is None:
            continue
        for what, expected, got in (
            ("count", counter.count(row), found.lengths[index]),
            ("trained tokens", counter.trained_tokens(row), found.trained[index] if found.trained else None),
        ):
            if expected != got:
                logger.warning(
                    f"{path}:{number}: tiktoken's {what} {got} differs from the tokenizer's {expected}; "
                    f"counting {path.name} again with the tokenizer"
                )
                return False
    return True


def count_file(path: Path, counter: TokenCounter) -> Iterable[tuple[int, int, dict[str, Any]]]:
    """(line, tokens, row) for every row of an engine JSONL file (counts cached, see :func:`counts`)."""
    for (number, row), tokens in zip(_rows(path), counts(path, counter), strict=True):
        yield number, tokens, row


def audit_rows(
    stage: str,
    path: Path,
    counter: TokenCounter,
    max_length: int,
    global_batch: int,
    epochs: float,
    max_steps: int | None,
    over_length: str = "drop",
) -> StageAudit:
    found = row_counts(path, counter)
    lengths = found.lengths
    over = []
    if any(n > max_length for n in lengths):  # only then are the rows read again, for their source lines
        sources = origin_lines(origins_of(path))
        for (number, _), n in zip(_rows(path), lengths, strict=True):
            origin = next(sources, None) or f"{path}:{number}"  # advanced on every row, to stay in step
            if n > max_length:
                over.append(f"{origin} ({n} tokens)")
    trained = len(lengths) - (len(over) if over_length == "drop" else 0)  # what the optimizer steps will see
    steps = max_steps if max_steps else math.ceil(math.ceil(trained / global_batch) * epochs)
    return StageAudit(
        stage=stage,
        records=len(lengths),
        total_tokens=sum(lengths),
        percentiles=percentiles(lengths),
        max_length=max_length,
        over_max_length=len(over),
        global_batch=global_batch,
        optimizer_steps=steps,
        min_pixels=counter.min_pixels,
        max_pixels=counter.max_pixels,
        over_length_rows=over[:20],
        trained_tokens=sum(found.trained) if found.trained is not None else None,
        images=sum(len(row) for row in found.images),
        image_tokens=sum(sum(row) for row in found.images),
        rows=found,
    )


def load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def render(audits: list[StageAudit]) -> str:
    lines = [
        f"{'stage':<14}{'records':>10}{'tokens':>14}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
        f"{'> max_len':>11}{'batch':>7}{'steps':>8}"
    ]
    for a in audits:
        p = a.percentiles
        lines.append(
            f"{a.stage:<14}{a.records:>10,}{a.total_tokens:>14,}{p.get('p50', 0):>8}{p.get('p90', 0):>8}"
            f"{p.get('p99', 0):>8}{p.get('max', 0):>8}{a.over_max_length:>11,}{a.global_batch:>7}"
            f"{a.optimizer_steps:>8,}"
        )
        for where in a.over_length_rows[:5]:
            lines.append(f"    over max_length {a.max_length}: {where}")
    return "\n".join(lines)


def counter_for(model: str, env: Mapping[str, str]) -> TokenCounter:
    """A counter with the model's tokenizer and the pixel limits the engine will use."""
    local = Path(model)
    return TokenCounter(load_tokenizer(model), *pixel_limits(env, local if local.is_dir() else None))
