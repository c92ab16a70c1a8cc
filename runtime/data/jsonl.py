"""Pairs JSONL files (`{"id", "image": path, "caption"}` per line) as records keyed by `id`.

A thin view over `runtime.pairs.read_pairs`, which owns the format's checks (UTF-8, JSON, fields,
duplicate ids); a line without a usable id is keyed by its line number (`line N`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from runtime.data.records import Record
from runtime.pairs import read_pairs


def read_jsonl(path: str | Path) -> Iterator[Record]:
    name = Path(path).name
    for row in read_pairs(path):
        key = str(row.id) if row.id is not None and row.error is None else f"line {row.line}"
        yield Record(key, name, image=row.image, caption=row.caption, error=row.error)
