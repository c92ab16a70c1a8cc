"""Pairs CSV files (a header row with `id`, `image` (a path), `caption`) as records or batch rows.

Read with the standard library's `csv` module (quoted captions with commas and line breaks work).
A relative image path is taken relative to the CSV file. Each row gets exactly one record: bad
rows (missing fields, duplicate id, bytes that are not UTF-8) carry an error. Rows are numbered
from 1 after the header; `read_rows` gives them as `runtime.pairs.Row`, so the batch command
writes and resumes a CSV exactly as a JSONL file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from runtime.data.records import Record
from runtime.errors import InputError
from runtime.pairs import Row

FIELDS = ("id", "image", "caption")


def _valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_rows(path: str | Path) -> Iterator[Row]:
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as e:
        raise InputError(f"{path}: cannot read the CSV file ({e.strerror}); check the path") from e
    seen: dict[str, int] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = [f for f in FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: header has no {', '.join(missing)} column; the first row must name "
                             "the columns id, image, caption")
        for n, rec in enumerate(reader, start=1):
            values = {f: rec.get(f) for f in FIELDS}
            row = Row(n, id=values["id"] or None)
            if not all(isinstance(v, str) and _valid_text(v) for v in values.values() if v is not None):
                row.id, row.error = None, f"row {n}: not valid UTF-8 text; re-encode the file as UTF-8"
            elif any(not values[f] for f in ("id", "image")) or values["caption"] is None:
                empty = [f for f in FIELDS if not values[f] and not (f == "caption" and values[f] == "")]
                row.error = f"row {n}: missing {', '.join(empty)}; each row needs id, image, caption"
            elif values["id"] in seen:
                row.error = f"row {n}: duplicate id {values['id']!r} (first on row {seen[values['id']]}); ids must be unique"
            else:
                seen[values["id"]] = n
                image = Path(values["image"]).expanduser()
                row.image = str(image if image.is_absolute() else path.parent / image)
                row.caption = values["caption"]
            yield row


def read_csv(path: str | Path) -> Iterator[Record]:
    name = Path(path).name
    for row in read_rows(path):
        key = str(row.id) if row.id is not None and row.error is None else f"row {row.line}"
        yield Record(key, name, image=row.image, caption=row.caption, error=row.error)
