"""Batch-mode I/O: read a pairs JSONL file, write verdicts JSONL, resume a killed run.

Input lines are `{"id": ..., "image": "path", "caption": "..."}`; a relative image path is taken
relative to the pairs file. Every input line yields exactly one output record carrying its `line`
number: a verdict, or `{"id", "line", "error"}` for a bad line (invalid UTF-8 or JSON, missing
fields, duplicate id). Records are appended and flushed batch by batch, so a killed run keeps
what it wrote; a rerun drops a half-written last line and skips lines already recorded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import InputError


@dataclass
class Row:
    line: int
    id: object = None
    image: str | None = None
    caption: str | None = None
    error: str | None = None


def _encodable(value: object) -> bool:
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_line(raw: bytes, line: int, base: Path) -> Row:
    try:
        obj = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        return Row(line, error=f"line {line}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8")
    except json.JSONDecodeError as e:
        return Row(line, error=f"line {line}: not a JSON object ({e.msg}); write one object per line")
    if not isinstance(obj, dict):
        return Row(line, error=f"line {line}: not a JSON object; write one object per line")
    row = Row(line, id=obj.get("id"))
    missing = [k for k in ("id", "image", "caption") if obj.get(k) is None]
    if missing:
        row.error = f"line {line}: missing field {', '.join(missing)}; each line needs id, image, caption"
    elif not isinstance(obj["image"], str) or not isinstance(obj["caption"], str):
        row.error = f"line {line}: image and caption must be strings"
    elif not isinstance(row.id, (str, int)) or isinstance(row.id, bool):
        row.error = f"line {line}: id must be a string or an integer"
    elif not all(_encodable(v) for v in (row.id, obj["image"], obj["caption"])):
        row.id = None
        row.error = f"line {line}: id, image or caption is not valid Unicode (lone surrogate escape); fix the text"
    else:
        image = Path(obj["image"]).expanduser()
        row.image = str(image if image.is_absolute() else base / image)
        row.caption = obj["caption"]
    return row


def read_pairs(path: str | Path) -> Iterator[Row]:
    """Rows of a pairs file, one per non-blank line, with per-line errors (duplicates included)."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as e:
        raise InputError(f"{path}: cannot read the pairs file ({e.strerror}); check the path") from e
    seen: dict[object, int] = {}
    with handle:
        for n, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            row = _parse_line(raw, n, path.parent)
            if row.error is None:
                if row.id in seen:
                    row.error = (f"line {n}: duplicate id {row.id!r} (first on line {seen[row.id]}); "
                                 "ids must be unique")
                else:
                    seen[row.id] = n
            yield row


def done_lines(output: Path) -> set[int]:
    """Input line numbers already recorded in `output`; drops a half-written last record.

    The file is only changed once every complete line has been read as one of this tool's
    records, so a wrong --output file is refused untouched.
    """
    if output.is_dir():
        raise InputError(f"--output {output}: is a directory; pass a .jsonl file path")
    if not output.exists():
        return set()
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    done = set()
    for n, raw in enumerate(data[:keep].splitlines(), start=1):
        try:
            done.add(int(json.loads(raw)["line"]))
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{output}: line {n} is not a record of this tool ({e}); "
                             "pass a new --output file") from e
    tail = data[keep:]
    if tail and not tail.startswith(b'{"id": '):
        raise InputError(f"{output}: last line is not a record of this tool; pass a new --output file")
    if tail:
        with output.open("r+b") as f:
            f.truncate(keep)
    return done


class RecordWriter:
    """Appends JSON records and makes each batch durable before the next starts."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a", encoding="utf-8")

    def write(self, records: list[dict]) -> None:
        self.handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()
