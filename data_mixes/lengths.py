"""A stage's over-length policy, applied to its prepared rows with exact token counts.

``drop`` (the default) removes every row longer than ``max_length`` before training and counts it; ``error`` stops
the stage naming each such row by its source file and line; ``truncate`` leaves the rows to the engine's right
truncation. The counts come from :mod:`audit` (cached), so applying the policy again costs a read of the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from spinegpt.data_mixes import audit
from spinegpt.data_mixes.prepare import PreparedData
from spinegpt.data_mixes.rows import DataError, dumps
from spinegpt.files import first_of, sha256_file

Policy = Literal["error", "drop", "truncate"]


def enforce_lengths(path: Path, counter: audit.TokenCounter, max_length: int, policy: Policy) -> dict[str, Any]:
    """Apply a stage's over-length policy to its prepared rows (``drop`` rewrites the file atomically)."""
    over: list[str] = []
    lengths: list[int] = []
    image_rows = 0
    tmp = path.with_suffix(".lengths.tmp")
    origins = audit.origins_of(path)
    origins_tmp = origins.with_name(origins.name + ".tmp")
    # Each row's source file:line, where preparation recorded it (a file prepared elsewhere: its own lines).
    sources = audit.origin_lines(origins)
    with tmp.open("w", encoding="utf-8") as kept, origins_tmp.open("w", encoding="utf-8") as kept_origins:
        for number, tokens, row in audit.count_file(path, counter):
            origin = next(sources, None) or f"{path}:{number}"
            if tokens > max_length:
                over.append(f"{origin}: {tokens} tokens")
                if policy == "drop":
                    continue
            lengths.append(tokens)
            image_rows += bool(row.get("images"))
            kept.write(dumps(row))
            kept_origins.write(origin + "\n")
    if over and policy == "drop":
        origins_tmp.replace(origins)
    else:
        origins_tmp.unlink()
    if over and policy == "error":
        tmp.unlink()
        raise DataError(
            f"{len(over)} record(s) exceed max_length {max_length} (over_length: error; use drop or truncate, or "
            f"raise max_length / lower MAX_PIXELS):\n{first_of(over)}"
        )
    if over and policy == "drop":
        tmp.replace(path)
    else:
        tmp.unlink()
    return {
        "policy": policy,
        "max_length": max_length,
        "over_max_length": len(over),
        "dropped": len(over) if policy == "drop" else 0,
        "truncated": len(over) if policy == "truncate" else 0,
        "rows": len(lengths),
        "image_rows": image_rows,
        "tokens": sum(lengths),
        "percentiles": audit.percentiles(lengths),
        "min_pixels": counter.min_pixels,
        "max_pixels": counter.max_pixels,
    }


def apply_length_policy(
    prepared: PreparedData, counter: audit.TokenCounter, max_length: int, policy: Policy
) -> tuple[PreparedData, dict[str, Any]]:
    """Exact token counts of the prepared rows against ``max_length``, and the stage's ``over_length`` policy applied
    (``drop`` rewrites the file and its hash; ``error`` names every record; ``truncate`` leaves it to the engine)."""
    lengths = enforce_lengths(prepared.path, counter, max_length, policy)
    if lengths["dropped"]:
        prepared = dataclasses.replace(
            prepared, rows=lengths["rows"], image_rows=lengths["image_rows"], sha256=sha256_file(prepared.path)
        )
    return prepared, lengths
