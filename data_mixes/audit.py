"""Exact token counts of training rows, and what they mean for a stage: over-length records and optimizer steps.

Text goes through the model's own tokenizer and chat template, with each ``<image>`` as Qwen2.5-VL's
``<|vision_start|><|image_pad|><|vision_end|>``; each image then costs its real visual token count from the
model's resize rule (SPEC §6) applied to the size in the image *header* (no pixel is decoded): both sides rounded
to multiples of 28 with the area brought into [min_pixels, max_pixels], (H/28)·(W/28) tokens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from spinegpt.data_mixes.records import IMAGE_TAG

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


def image_tokens(path: str | Path, min_pixels: int, max_pixels: int) -> int:
    with Image.open(path) as image:  # reads the header only
        width, height = image.size
    h, w = resized(height, width, min_pixels, max_pixels)
    return (h // FACTOR) * (w // FACTOR)


class Counter:
    """Token counts for engine rows with one model's tokenizer and one stage's pixel limits."""

    def __init__(self, tokenizer: Any, min_pixels: int, max_pixels: int):
        self.tokenizer, self.min_pixels, self.max_pixels = tokenizer, min_pixels, max_pixels
        self._image_cache: dict[str, int] = {}

    def text_tokens(self, messages: list[dict[str, str]]) -> int:
        converted = [
            {"role": m["role"], "content": m["content"].replace(IMAGE_TAG, VISION_PLACEHOLDER)} for m in messages
        ]
        ids = self.tokenizer.apply_chat_template(converted, tokenize=True, add_generation_prompt=False)
        if isinstance(ids, Mapping):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return len(ids)

    def image(self, path: str) -> int:
        if path not in self._image_cache:
            self._image_cache[path] = image_tokens(path, self.min_pixels, self.max_pixels)
        return self._image_cache[path]

    def count(self, row: Mapping[str, Any]) -> int:
        """Tokens of one engine row: chat-templated text plus every image's visual tokens."""
        images = row.get("images") or []
        # Each placeholder already holds one <|image_pad|>; the processor expands it to the image's token count.
        return self.text_tokens(row["messages"]) + sum(self.image(p) - 1 for p in images)


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> int:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1]}


def count_file(path: Path, counter: Counter) -> Iterable[tuple[int, int, dict[str, Any]]]:
    """(line, tokens, row) for every row of an engine JSONL file."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                row = json.loads(line)
                yield number, counter.count(row), row


def audit_rows(
    stage: str,
    path: Path,
    counter: Counter,
    max_length: int,
    global_batch: int,
    epochs: float,
    max_steps: int | None,
    over_length: str = "drop",
) -> StageAudit:
    lengths, over = [], []
    for number, tokens, _row in count_file(path, counter):
        lengths.append(tokens)
        if tokens > max_length:
            over.append(f"{path}:{number} ({tokens} tokens)")
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


def counter_for(model: str, env: Mapping[str, str]) -> Counter:
    """A counter with the model's tokenizer and the pixel limits the engine will use."""
    local = Path(model)
    return Counter(load_tokenizer(model), *pixel_limits(env, local if local.is_dir() else None))
