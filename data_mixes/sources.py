"""The readers a ``sources.yaml`` entry may name, with the splits each can yield. Adding a data source: a reader
function registered in its module's ``READERS`` (here if the module is new) and an entry in ``sources.yaml``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from spinegpt.data_mixes import readers, spinemed
from spinegpt.data_mixes.readers import ReaderInfo, ReadOptions, SourceError
from spinegpt.data_mixes.records import Bad, Record

READERS: dict[str, ReaderInfo] = {**readers.READERS, **spinemed.READERS}


def get(kind: str) -> ReaderInfo:
    if kind not in READERS:
        raise SourceError(f"unknown reader {kind!r}; known: {', '.join(READERS)}")
    return READERS[kind]


def read(kind: str, path: Path, options: ReadOptions) -> Iterator[Record | Bad]:
    return get(kind).read(path, options)
