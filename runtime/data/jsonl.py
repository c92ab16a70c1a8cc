"""Pairs JSONL files: `{"id": ..., "image": "path", "caption": "..."}` per line, as records.

A relative image path is taken relative to the pairs file. Every line yields exactly one record
carrying its `line` number: a pair, or a record with `error` for a bad line (invalid UTF-8 or
JSON, missing fields, duplicate id, nesting too deep, line too long); a blank line gets an error
record too. A record is keyed by its id, or `line N` when the line gives no usable one.
A line is never held whole past MAX_LINE_BYTES.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from runtime.data.formats import Format, register
from runtime.data.records import Record, keyed_by_id
from runtime.files import open_regular, show

MAX_LINE_BYTES = 16 << 20  # a longer pairs line is an error record (the line is skipped, not held)


def encodable(value: object) -> bool:
    """Whether UTF-8 can hold `value`'s text (not a lone surrogate)."""
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _valid_id(value: object) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _parse_line(raw: bytes, rec: Record, base: Path) -> None:
    """Fill `rec` from one line: id, image, caption, or the error."""
    line = rec.line
    if not raw.strip():
        rec.error = f"line {line}: blank line, no pair on it; remove it (this record only keeps the line count)"
        return
    try:
        obj = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        rec.error = f"line {line}: not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8"
        return
    except json.JSONDecodeError as e:
        rec.error = f"line {line}: not a JSON object ({e.msg}); write one object per line"
        return
    except RecursionError:
        rec.error = f"line {line}: JSON nested too deeply to read; write one flat object per line"
        return
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        rec.error = f"line {line}: not a JSON object ({' '.join(str(e).split())[:200]}); write one object per line"
        return
    if not isinstance(obj, dict):
        rec.error = f"line {line}: not a JSON object; write one object per line"
        return
    rec.id = obj.get("id") if _valid_id(obj.get("id")) else None
    missing = [k for k in ("id", "image", "caption") if obj.get(k) is None]
    if missing:
        rec.error = f"line {line}: missing field {', '.join(missing)}; each line needs id, image, caption"
    elif not isinstance(obj["image"], str) or not isinstance(obj["caption"], str):
        rec.error = f"line {line}: image and caption must be strings"
    elif rec.id is None:
        rec.error = f"line {line}: id must be a string or an integer"
    elif not all(encodable(v) for v in (rec.id, obj["image"], obj["caption"])):
        rec.error = f"line {line}: id, image or caption is not valid Unicode (lone surrogate escape); fix the text"
    else:
        image = Path(obj["image"]).expanduser()
        rec.image = str(image if image.is_absolute() else base / image)
        rec.caption = obj["caption"]


def _lines(handle) -> Iterator[bytes | None]:
    """The file's lines; None for a line over MAX_LINE_BYTES (read past, never held whole)."""
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        if len(raw) <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield None


def read_jsonl(path: str | Path) -> Iterator[Record]:
    """Records of a pairs file, one per line (blank ones included), with per-line errors (duplicates too)."""
    path = Path(path)
    handle = open_regular(path, f"pairs file {show(path)}")
    seen: dict[object, int] = {}
    with handle:
        for n, raw in enumerate(_lines(handle), start=1):
            rec = Record(source=path.name, line=n)
            if raw is None:
                rec.error = f"line {n}: longer than {MAX_LINE_BYTES:,} bytes; shorten it"
            else:
                _parse_line(raw, rec, path.parent)
            if rec.error is None:
                if rec.id in seen:
                    rec.error = f"line {n}: duplicate id {rec.id!r} (first on line {seen[rec.id]}); ids must be unique"
                else:
                    seen[rec.id] = n
            yield keyed_by_id(rec, f"line {n}")


FORMAT = register(Format("jsonl", "pairs JSONL", lambda shard, opts: read_jsonl(shard.path), (".jsonl",), pairs=True))
