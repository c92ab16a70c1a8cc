"""The verdicts JSONL of a pairs file (JSONL or CSV in): one record per input line, resumed by line.

Every input line yields exactly one output record carrying its `line` number: the verdict, or
`{"id", "line", "error", "caption"}` for a line its reader refused; every record carries the
input `caption` as scored, and the demo model's `note`. Records are appended and flushed one by
one, so a killed run keeps what it wrote; a rerun drops a half-written last line and skips the
lines already recorded. Only records this tool writes (an object with `id`, `line` and `error`)
count as done; anything else in the output is refused, and the file is left untouched.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from runtime.data import progress
from runtime.data.formats import read_records
from runtime.data.jsonl import encodable
from runtime.data.records import Record, Shard
from runtime.data.stream import Event
from runtime.errors import InputError
from runtime.files import check_regular, open_regular, show

RECORD_HEAD = b'{"id": '  # how every record written by RecordWriter starts


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
    return text if encodable(text) else json.dumps(record)


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


class JsonlOutput:
    """`runtime.data.run.Output` for a pairs file: verdicts JSONL, resumed by line."""

    def __init__(self, path: Path, opts):
        self.path, self.share, self.opts, self.reports = path, None, opts, True
        self.done: set[int] = set()
        self.records: list[Record] = []
        self.writer = self.bar = self.note = None
        self.failed = 0

    def todo(self, shards: list[Shard]) -> list[tuple[Shard, Iterable[Record]]]:
        (pairs_file,) = shards
        self.done = done_lines(self.path)
        self.records = [r for r in read_records(pairs_file, self.opts) if r.line not in self.done]
        self.writer = RecordWriter(self.path)
        self.bar = progress.bar(len(self.records) + len(self.done), self.opts.quiet, initial=len(self.done))
        return [(pairs_file, self.records)] if self.records else []

    def start(self, scorer) -> None:
        self.note = scorer.note

    def take(self, event: Event) -> None:
        r = event.record
        if r is None:  # the file's end (it was read whole before scoring began)
            return
        record = {"id": r.id, "line": r.line, "error": r.error, "caption": r.caption} if event.verdict is None else \
            {**event.verdict.to_dict(), "caption": r.caption, "line": r.line}
        if self.note is not None:
            record["note"] = self.note
        self.writer.write([record])
        self.failed += record["error"] is not None
        self.bar.update(1)

    def abort(self, error: Exception) -> None:
        raise error

    def close(self) -> None:
        for part in (self.bar, self.writer):
            if part is not None:
                part.close()

    def finish(self) -> int:
        print(f"{len(self.records)} pairs scored into {self.path} ({self.failed} with errors, "
              f"{len(self.done)} already done)", file=sys.stderr)
        return 0
