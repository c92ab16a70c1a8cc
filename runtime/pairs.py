"""Batch-mode I/O: read a pairs JSONL file, write verdicts JSONL, resume a killed run.

Input lines are `{"id": ..., "image": "path", "caption": "..."}`; a relative image path is taken
relative to the pairs file. Every input line yields exactly one output record carrying its `line`
number: a verdict, or `{"id", "line", "error"}` for a bad line (invalid UTF-8 or JSON, missing
fields, duplicate id, nesting too deep, line too long); a blank line gets an error record too.
Records are appended and flushed batch by batch, so a killed run keeps what it wrote; a rerun
drops a half-written last line and skips lines already recorded. Only records this tool writes
(an object with `id`, `line` and `error`) count as done; anything else in the output is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import InputError
from runtime.files import check_regular, open_regular, show

MAX_LINE_BYTES = 16 << 20  # a longer pairs line is an error record (the line is skipped, not held)
RECORD_HEAD = b'{"id": '   # how every record written by RecordWriter starts


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


def _valid_id(value: object) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _parse_line(raw: bytes, line: int, base: Path) -> Row:
    if not raw.strip():
        return Row(line, error=f"line {line}: blank line, no pair on it; remove it (this record only keeps "
                               "the line count)")
    try:
        obj = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        return Row(line, error=f"line {line}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8")
    except json.JSONDecodeError as e:
        return Row(line, error=f"line {line}: not a JSON object ({e.msg}); write one object per line")
    except RecursionError:
        return Row(line, error=f"line {line}: JSON nested too deeply to read; write one flat object per line")
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return Row(line, error=f"line {line}: not a JSON object ({' '.join(str(e).split())[:200]}); "
                               "write one object per line")
    if not isinstance(obj, dict):
        return Row(line, error=f"line {line}: not a JSON object; write one object per line")
    row = Row(line, id=obj.get("id") if _valid_id(obj.get("id")) else None)
    missing = [k for k in ("id", "image", "caption") if obj.get(k) is None]
    if missing:
        row.error = f"line {line}: missing field {', '.join(missing)}; each line needs id, image, caption"
    elif not isinstance(obj["image"], str) or not isinstance(obj["caption"], str):
        row.error = f"line {line}: image and caption must be strings"
    elif row.id is None:
        row.error = f"line {line}: id must be a string or an integer"
    elif not all(_encodable(v) for v in (row.id, obj["image"], obj["caption"])):
        row.error = f"line {line}: id, image or caption is not valid Unicode (lone surrogate escape); fix the text"
    else:
        image = Path(obj["image"]).expanduser()
        row.image = str(image if image.is_absolute() else base / image)
        row.caption = obj["caption"]
    return row


def _lines(handle) -> Iterator[bytes | None]:
    """The file's lines; None for a line over MAX_LINE_BYTES (read past, never held whole)."""
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        if len(raw) <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield None


def read_pairs(path: str | Path) -> Iterator[Row]:
    """Rows of a pairs file, one per line (blank ones included), with per-line errors (duplicates too)."""
    path = Path(path)
    handle = open_regular(path, f"pairs file {show(path)}")
    seen: dict[object, int] = {}
    with handle:
        for n, raw in enumerate(_lines(handle), start=1):
            if raw is None:
                yield Row(n, error=f"line {n}: longer than {MAX_LINE_BYTES:,} bytes; shorten it")
                continue
            row = _parse_line(raw, n, path.parent)
            if row.error is None:
                if row.id in seen:
                    row.error = (f"line {n}: duplicate id {row.id!r} (first on line {seen[row.id]}); "
                                 "ids must be unique")
                else:
                    seen[row.id] = n
            yield row


def _record_line(raw: bytes) -> int | None:
    """The input line number of one of this tool's records, or None for anything else."""
    try:
        rec = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or not {"id", "line", "error"} <= rec.keys():
        return None
    line = rec["line"]
    return line if isinstance(line, int) and not isinstance(line, bool) and line >= 1 else None


def done_lines(output: Path) -> set[int]:
    """Input line numbers already recorded in `output`; drops a half-written last record.

    The file is only changed once every complete line has been read as one of this tool's
    records, so a wrong --output file is refused untouched.
    """
    if not output.exists() and not output.is_symlink():
        return set()
    what = f"--output {show(output)}"
    check_regular(output, what)
    done, keep = set(), 0
    with open_regular(output, what) as f:
        for n, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                if not (raw.startswith(RECORD_HEAD) or RECORD_HEAD.startswith(raw)):
                    raise InputError(f"{what}: last line is not a record of this tool; pass a new --output file")
                break
            line = _record_line(raw)
            if line is None:
                raise InputError(f"{what}: line {n} is not a record of this tool (an object with id, line "
                                 "and error); pass a new --output file")
            done.add(line)
            keep += len(raw)
        tail = f.tell() != keep
    if tail:
        with output.open("r+b") as f:
            f.truncate(keep)
    return done


def _dumps(record: dict) -> str:
    """One record as a JSON line; text that UTF-8 cannot hold (a lone surrogate in an id) is
    written as JSON \\u escapes, so the id is kept exactly as the input line gave it."""
    text = json.dumps(record, ensure_ascii=False)
    return text if _encodable(text) else json.dumps(record)


class RecordWriter:
    """Appends JSON records and makes each batch durable before the next starts."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a", encoding="utf-8")

    def write(self, records: list[dict]) -> None:
        self.handle.write("".join(_dumps(r) + "\n" for r in records))
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()
