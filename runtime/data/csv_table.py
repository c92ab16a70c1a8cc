"""Pairs CSV files (a header row with `id`, `image` (a path), `caption`) as records.

Read with the standard library's `csv` module (quoted captions with commas and line breaks work).
A relative image path is taken relative to the CSV file. Each row gets exactly one record, its
`line` the row number from 1 after the header: bad rows (missing fields, duplicate id, bytes that
are not UTF-8) carry an error and are keyed `row N`. The batch command writes and resumes a CSV
exactly as a JSONL file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from runtime.data.formats import Format, register
from runtime.data.jsonl import encodable
from runtime.data.records import Record, keyed_by_id
from runtime.errors import InputError

FIELDS = ("id", "image", "caption")


def read_csv(path: str | Path) -> Iterator[Record]:
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
        for n, row in enumerate(reader, start=1):
            values = {f: row.get(f) for f in FIELDS}
            rec = Record(id=values["id"] or None, source=path.name, line=n)
            if not all(isinstance(v, str) and encodable(v) for v in values.values() if v is not None):
                rec.id, rec.error = None, f"row {n}: not valid UTF-8 text; re-encode the file as UTF-8"
            elif any(not values[f] for f in ("id", "image")) or values["caption"] is None:
                empty = [f for f in FIELDS if not values[f] and not (f == "caption" and values[f] == "")]
                rec.error = f"row {n}: missing {', '.join(empty)}; each row needs id, image, caption"
            elif values["id"] in seen:
                rec.error = f"row {n}: duplicate id {values['id']!r} (first on row {seen[values['id']]}); ids must be unique"
            else:
                seen[values["id"]] = n
                image = Path(values["image"]).expanduser()
                rec.image = str(image if image.is_absolute() else path.parent / image)
                rec.caption = values["caption"]
            yield keyed_by_id(rec, f"row {n}")


FORMAT = register(Format("csv", "pairs CSV", lambda shard, opts: read_csv(shard.path), (".csv",), pairs=True))
