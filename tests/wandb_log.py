"""Read the records of an offline wandb run file (``run-*.wandb``) without a server.

wandb >= 0.20 writes them from its Go core and ships no Python reader; the format is LevelDB's log format behind a
7-byte ``:W&B`` header: 32 KiB blocks of chunks (crc32 4 bytes, length 2, type 1: full/first/middle/last), each
record a ``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb run file")
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block  # block trailer padding
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def summary(path: Path) -> dict[str, Any]:
    """Run identity, the config keys, and the logged values of every key (history), from one run file."""
    import json

    run: dict[str, Any] = {"history": {}, "config": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(group=record.run.run_group, job_type=record.run.job_type, project=record.run.project)
            for item in record.run.config.update:
                run["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                run["history"].setdefault(key, []).append(json.loads(item.value_json))
    return run
