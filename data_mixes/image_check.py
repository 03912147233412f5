"""Every image a stage trains on, decoded once before training.

A file can have a valid header and a broken body (a truncated download, a bad copy). The engine then logs "another
piece of data will be randomly selected" and trains on another row: the run succeeds on data it was not given.
Reading the header (what token counting does) does not catch that; a full decode does. Results are cached by the
file's sha256, so a re-run (or the next stage using the same images) only hashes them.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from spinegpt.files import sha256_file
from spinegpt.paths import cache_root
from spinegpt.progress import Progress
from spinegpt.sqlite_cache import Cache

logger = logging.getLogger(__name__)

T = TypeVar("T")


def decode_problem(path: Path) -> str | None:
    """Why the image cannot be used, or None when it decodes completely."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # the whole body, not just the header
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def _verdict(value: Any) -> bool:
    """A cached verdict as a fresh check gives it: ``{"problem": None}`` or ``{"problem": "<why>"}``."""
    return isinstance(value, dict) and value.keys() == {"problem"} and isinstance(value["problem"], str | None)


def _progress(results: Iterator[T], total: int, what: str) -> Iterator[T]:
    """Pass results through, with progress every few seconds: a first check of 150k images takes minutes."""
    progress = Progress(f"images {what}", total, unit="images", every_s=5.0, log=logger)
    for result in results:
        yield result
        progress.advance()
    progress.close()


def check_images(uses: Mapping[str, str], workers: int | None = None) -> list[str]:
    """``uses``: image path -> the first ``file:line`` that names it. Returns one problem line per bad image."""
    if not uses:
        return []
    paths = sorted(uses)
    workers = workers or min(8, os.cpu_count() or 1)
    cache = Cache(cache_root() / "image-checks.sqlite", "verdicts")
    try:
        # Hashing and decoding both release the GIL for their heavy parts: threads are enough.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            digests = dict(
                zip(
                    paths, _progress(pool.map(lambda p: sha256_file(Path(p)), paths), len(paths), "hashed"), strict=True
                )
            )
            known = {p: found["problem"] for p in paths if (found := cache.get(digests[p], _verdict)) is not None}
            todo = [p for p in paths if p not in known]
            decoded = pool.map(lambda p: decode_problem(Path(p)), todo)
            fresh = dict(zip(todo, _progress(decoded, len(todo), "decoded"), strict=True))
        cache.put_many((digests[p], {"problem": problem}) for p, problem in fresh.items())
        problems = {**known, **fresh}
    finally:
        cache.close()
    return [f"{uses[p]}: image {p} cannot be decoded ({problem})" for p, problem in problems.items() if problem]
