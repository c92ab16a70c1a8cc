"""A run's verdicts, read for the review page: one `Unit` per verdicts file (a shard's
`SHARD.aitqe.parquet`, or the verdicts JSONL of a pairs file), read in two passes.

`index` yields, chunk by chunk, only the columns that decide what is drawn and shown (position,
key, overall, overall_expected, replaced, dropped) as Arrow tables, whatever the file's kind;
`fetch` reads the whole rows at the chosen positions back, in one shape (`Row`) for both kinds. A
column a run of an older version lacks (caption, replaced, dropped, note) reads as unknown: None,
or false for replaced and dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.data import verdicts as verdict_files
from runtime.data.records import OUTPUT_SUFFIX
from runtime.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

CHUNK = 65_536  # rows per index chunk
INDEX = ("key", "overall", "overall_expected", "replaced", "dropped")  # what the survey reads of every row
SHOWN = ("key", "shard", "overall", "overall_expected", "recaption", "caption", "sub_scores", "sub_scores_expected",
         "error", "parse_error", "caption_truncated", "replaced", "dropped", "note", "model", "model_fingerprint")


@dataclass(frozen=True)
class Unit:
    path: Path
    name: str  # the shard's name (`00000`), or the pairs file's verdicts file name
    jsonl: bool = False


@dataclass
class Row:
    """One verdict as the page shows it."""

    unit: str
    pos: int  # its row in the verdicts file (Parquet) or line from 0 (JSONL)
    key: str
    overall: int | None = None
    expected: float | None = None
    caption: str | None = None
    recaption: str | None = None
    subs: list = field(default_factory=list)  # [name, score, expected]
    error: str | None = None
    replaced: bool = False
    dropped: bool = False
    note: str | None = None
    model: str | None = None
    fingerprint: str | None = None
    line: int | None = None  # a pairs file's input line (JSONL verdicts), to find its image
    thumb: str | None = None  # the image as a small JPEG data URI, when --input gave it


def units(path: Path) -> list[Unit]:
    """The verdicts files of a run: a folder of `*.aitqe.parquet`, one such file, or a verdicts JSONL."""
    if path.is_dir():
        files = sorted(path.glob(f"*{OUTPUT_SUFFIX}"))
        if files:
            return [Unit(f, f.name[: -len(OUTPUT_SUFFIX)]) for f in files]
    elif path.is_file():
        if path.name.endswith(OUTPUT_SUFFIX):
            return [Unit(path, path.name[: -len(OUTPUT_SUFFIX)])]
        return [Unit(path, path.name, jsonl=True)]
    raise InputError(f"--verdicts {path}: no *{OUTPUT_SUFFIX} files or verdicts .jsonl there; pass the --output "
                     "folder (shards) or file (pairs) of a runtime.score run")


def run_settings(unit: Unit) -> dict:
    """The run's settings from the Parquet metadata `aitqe.run`, or {} (a JSONL run, an older run)."""
    return {} if unit.jsonl else verdict_files.run_of(unit.path)


def _jsonl_lines(unit: Unit) -> Iterator[tuple[int, dict]]:
    """(line from 0, record) for each verdict record of a verdicts JSONL."""
    with unit.path.open("rb") as f:
        for n, raw in enumerate(f):
            try:
                rec = json.loads(raw)
            except ValueError:
                raise InputError(f"--verdicts {unit.path}: line {n + 1} is not JSON; pass the verdicts JSONL "
                                 "a runtime.score run wrote") from None
            if isinstance(rec, dict):
                yield n, rec


def _jsonl_key(rec: dict) -> str:
    return str(rec["id"]) if rec.get("id") is not None else f"line {rec.get('line')}"


def _jsonl_index(rec: dict) -> tuple:
    """A verdict record's INDEX values (its fields are named as `Verdict.to_dict` names them)."""
    return (_jsonl_key(rec), rec.get("overall_score"), rec.get("overall_expected"), rec.get("replaced"),
            rec.get("dropped"))


def index(unit: Unit) -> Iterator[pa.Table]:
    """Arrow tables of `pos` and the INDEX columns of the unit's rows, CHUNK rows at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def table(pos, cols: dict) -> pa.Table:
        values = [pa.nulls(len(pos)) if cols.get(name) is None else cols[name] for name in INDEX]
        types = (pa.string(), pa.int32(), pa.float64(), pa.bool_(), pa.bool_())
        key, overall, expected, replaced, dropped = (pa.array(v, t) for v, t in zip(values, types))
        return pa.table({"pos": pa.array(pos, pa.int64()), "key": key, "overall": overall, "overall_expected": expected,
                         "replaced": pc.fill_null(replaced, False), "dropped": pc.fill_null(dropped, False)})

    if unit.jsonl:
        pos, rows = [], []
        for n, rec in _jsonl_lines(unit):
            pos.append(n)
            rows.append(_jsonl_index(rec))
            if len(pos) == CHUNK:
                yield table(pos, dict(zip(INDEX, map(list, zip(*rows)))))
                pos, rows = [], []
        if pos:
            yield table(pos, dict(zip(INDEX, map(list, zip(*rows)))))
        return
    try:
        pf = pq.ParquetFile(unit.path)
    except Exception as e:  # pyarrow's errors for a file that is not Parquet are several types
        raise InputError(f"--verdicts {unit.path}: not a readable Parquet file ({e}); pass a runtime.score "
                         "verdicts folder") from None
    have = [c for c in INDEX if c in pf.schema_arrow.names]
    start = 0
    for batch in pf.iter_batches(batch_size=CHUNK, columns=have):
        yield table(pa.arange(start, start + batch.num_rows), {c: batch.column(c) for c in have})
        start += batch.num_rows


def _subs(scores: dict, expected: dict) -> list:
    return [[name, scores.get(name), expected.get(name)] for name in {**scores, **expected}]


def _error(error: str | None, parse_error: str | None) -> str | None:
    return error or (f"parse error: {parse_error}" if parse_error else None)


def _from_jsonl(unit: Unit, pos: int, rec: dict) -> Row:
    subs = rec.get("sub_scores") if isinstance(rec.get("sub_scores"), dict) else {}
    subs = {name: s for name, s in subs.items() if isinstance(s, dict)}
    return Row(unit.name, pos, _jsonl_key(rec), overall=rec.get("overall_score"), expected=rec.get("overall_expected"),
               caption=rec.get("caption"), recaption=rec.get("recaption"),
               subs=_subs({n: s.get("score") for n, s in subs.items()}, {n: s.get("expected") for n, s in subs.items()}),
               error=_error(rec.get("error"), rec.get("parse_error")), replaced=bool(rec.get("replaced")),
               dropped=bool(rec.get("dropped")), note=rec.get("note"), model=rec.get("model"), line=rec.get("line"))


def _from_parquet(unit: Unit, pos: int, r: dict) -> Row:
    return Row(unit.name, pos, r["key"], overall=r.get("overall"), expected=r.get("overall_expected"),
               caption=r.get("caption"), recaption=r.get("recaption"),
               subs=_subs(dict(r.get("sub_scores") or []), dict(r.get("sub_scores_expected") or [])),
               error=_error(r.get("error"), r.get("parse_error")), replaced=bool(r.get("replaced")),
               dropped=bool(r.get("dropped")), note=r.get("note"), model=r.get("model"),
               fingerprint=r.get("model_fingerprint"))


def fetch(unit: Unit, positions: set[int]) -> list[Row]:
    """The whole rows at `positions` of the unit, in file order."""
    import pyarrow.parquet as pq

    if unit.jsonl:
        return [_from_jsonl(unit, n, rec) for n, rec in _jsonl_lines(unit) if n in positions]
    pf = pq.ParquetFile(unit.path)
    table = pf.read(columns=[c for c in SHOWN if c in pf.schema_arrow.names])
    order = sorted(positions)
    return [_from_parquet(unit, pos, r) for pos, r in zip(order, table.take(order).to_pylist())]
