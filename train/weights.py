"""Checks on saved model folders: which tensors they hold, whether they load, and a content hash.

Reading safetensors headers (a JSON prefix of each file) is enough to prove that a stage saved every tensor of the
model it started from, with the same shapes, in milliseconds and without importing transformers. Where the
starting model is not a local folder (a hub id) we fall back to transformers' own loader on the meta device.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class WeightsError(RuntimeError):
    """A saved model folder is incomplete or does not match the model it was trained from."""


def safetensors_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    return [f for f in files if not f.name.startswith("adapter_")]


def shard_problems(folder: Path, adapters: bool = False) -> list[str]:
    """Why each safetensors shard of ``folder`` is unreadable (a truncated copy, a cut-off save), from its header
    and its size alone: the header must parse and the file must hold every byte the header promises. ``adapters``:
    LoRA adapter files too."""
    problems = []
    for file in sorted(folder.glob("*.safetensors")) if adapters else safetensors_files(folder):
        size = file.stat().st_size
        try:
            with file.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > size:
                    raise ValueError(f"header of {length} bytes in a file of {size}")
                header = json.loads(handle.read(length))
            end = max((info["data_offsets"][1] for k, info in header.items() if k != "__metadata__"), default=0)
        except (struct.error, ValueError, KeyError, TypeError, IndexError) as exc:
            problems.append(f"{file}: not a readable safetensors file ({exc or type(exc).__name__})")
            continue
        if size < 8 + length + end:
            problems.append(f"{file}: truncated: {size:,} bytes, its header needs {8 + length + end:,}")
    return problems


def tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape over every safetensors shard in ``folder`` (headers only)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in safetensors_files(folder):
        with file.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        for name, info in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(info["shape"])
    return shapes


def weights_sha256(folder: Path) -> str:
    """One hash over every weight shard, in name order (file names are part of the hash)."""
    digest = hashlib.sha256()
    for file in safetensors_files(folder):
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def check_complete(folder: Path) -> None:
    """Config, weights, tokenizer and processor are all there: what from_pretrained and the next stage need."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not safetensors_files(folder):
        missing.append("*.safetensors")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files")
    if not any((folder / f).is_file() for f in PROCESSOR_FILES):
        missing.append("processor config")
    if missing:
        raise WeightsError(f"{folder}: missing {', '.join(missing)}")
    try:
        json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{folder}/config.json: invalid JSON ({exc.msg})") from None
    if broken := shard_problems(folder):
        raise WeightsError("; ".join(broken))


def check_matches(saved: Path, reference: Path) -> None:
    """``saved`` holds exactly the tensors of ``reference``, with the same shapes."""
    got, want = tensor_shapes(saved), tensor_shapes(reference)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    reshaped = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s), e.g. {extra[:3]}")
    if reshaped:
        problems.append(f"{len(reshaped)} tensor(s) with other shapes, e.g. {reshaped[:3]}")
    if problems:
        raise WeightsError(f"{saved} does not match {reference}: " + "; ".join(problems))


def check_loads_with_transformers(folder: Path) -> None:
    """Let transformers build the model on the meta device from ``folder`` and report any key it cannot fill."""
    from transformers import AutoModelForImageTextToText

    loaded: Any = AutoModelForImageTextToText.from_pretrained(folder, device_map="meta", output_loading_info=True)
    info: dict[str, Any] = loaded[1]
    bad = {k: sorted(v)[:3] for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if bad:
        raise WeightsError(f"{folder} does not load cleanly: {bad}")


def verify(saved: Path, started_from: str) -> None:
    """Raise :class:`WeightsError` unless ``saved`` is a complete model that loads like the one it came from."""
    check_complete(saved)
    reference = Path(started_from)
    if reference.is_dir() and safetensors_files(reference):
        check_matches(saved, reference)
    else:
        check_loads_with_transformers(saved)
