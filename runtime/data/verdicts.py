"""A shard's verdicts as Parquet (`SHARD.aitqe.parquet`), one row per input key, written atomically.

Columns: key, uid (DataComp, else null), shard (the input file), caption (the input caption as
scored), overall (int), overall_expected (float: the probability-weighted score), recaption,
replaced (the enhanced copy holds the recaption instead), dropped (left out of the enhanced copy),
overall_explanation, sub_scores (map: aspect name -> int), sub_scores_expected (map: aspect name ->
float), caption_truncated, parse_error, error, model, model_fingerprint, note (the demo model's
warning), raw_text. Rows are in the shard's order; join on `key`. The file's metadata
`aitqe.complete_rows` marks it whole (`complete`); `aitqe.run` is the run's settings as JSON
(`settings`). A file of an older version, without the columns caption, replaced, dropped and note
or the run's settings, is still complete: its shard is not scored again (rewritten with them when
an enhanced copy is made from it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from runtime.atomic import atomic_path
from runtime.data.records import Record


def schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()), ("uid", pa.string()), ("shard", pa.string()), ("caption", pa.string()),
        ("overall", pa.int32()), ("overall_expected", pa.float64()), ("recaption", pa.string()),
        ("replaced", pa.bool_()), ("dropped", pa.bool_()),
        ("overall_explanation", pa.string()), ("sub_scores", pa.map_(pa.string(), pa.int32())),
        ("sub_scores_expected", pa.map_(pa.string(), pa.float64())),
        ("caption_truncated", pa.bool_()), ("parse_error", pa.string()), ("error", pa.string()),
        ("model", pa.string()), ("model_fingerprint", pa.string()), ("note", pa.string()), ("raw_text", pa.string()),
    ])


COMPLETE = "aitqe.complete_rows"  # schema metadata: the row count of a wholly scored shard
RUN = "aitqe.run"  # schema metadata: the run's settings (JSON)
COLUMNS = ("key", "uid", "shard", "caption", "overall", "overall_expected", "recaption", "replaced", "dropped",
           "overall_explanation", "sub_scores", "sub_scores_expected", "caption_truncated", "parse_error", "error",
           "model", "model_fingerprint", "note", "raw_text")


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("aitqe-edge")
    except PackageNotFoundError:
        return "unknown"


def copy_settings(opts) -> dict:
    """The settings of the enhanced copy (`opts`: RunOptions)."""
    return {"enhance_below": opts.enhance_below, "drop_below": opts.drop_below, "keep_failed": opts.keep_failed}


def settings(opts, model: str, fingerprint: str, engine: str | None, demo: bool) -> dict:
    """The run's settings written as `aitqe.run`: what a curator needs to know how a table was made."""
    return {"model": model, "model_fingerprint": fingerprint, "engine": engine, "demo": demo, **copy_settings(opts),
            "max_new_tokens": opts.max_new_tokens, "output_all": opts.output_all, "version": version()}


def row(record: Record, verdict: object | None, model: str, fingerprint: str, note: str | None = None) -> dict:
    """One output row: the record's key and caption and, when it was scored, its verdict's fields."""
    out = dict.fromkeys(COLUMNS)
    out.update(key=record.key, uid=record.uid, shard=record.source, caption=record.caption, model=model,
               model_fingerprint=fingerprint, error=record.error, note=note, replaced=False, dropped=False)
    if verdict is not None:
        subs = {name: s.get("score") for name, s in (verdict.sub_scores or {}).items()}
        expected = {name: s.get("expected") for name, s in (verdict.sub_scores or {}).items()}
        out.update(overall=verdict.overall_score, overall_expected=verdict.overall_expected,
                   recaption=verdict.recaption, overall_explanation=verdict.overall_explanation,
                   sub_scores=[(k, v) for k, v in subs.items() if v is not None],
                   sub_scores_expected=[(k, v) for k, v in expected.items() if v is not None],
                   caption_truncated=verdict.caption_truncated, parse_error=verdict.parse_error,
                   error=verdict.error, model=verdict.model or model, raw_text=verdict.raw_text)
    return out


def write(rows: Iterable[dict], path: Path, run: dict | None = None) -> int:
    """Write rows atomically to `path` (with the run's settings as metadata); their count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(rows)
    meta = {COMPLETE: str(len(rows)), **({RUN: json.dumps(run, sort_keys=True)} if run is not None else {})}
    table = pa.Table.from_pylist(rows, schema=schema().with_metadata(meta))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return len(rows)


def complete(path: Path) -> bool:
    """Whether `path` is a shard's whole verdicts: written by `write` once every key of the shard had its
    row (its metadata says how many, and it holds them). A file without that mark (an empty table
    with the right columns, a file of an older version) is not: its shard is scored again."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except Exception:
        return False
    marked = (meta.metadata or {}).get(COMPLETE.encode())
    return marked is not None and marked.isdigit() and int(marked) == meta.num_rows


def run_of(path: Path) -> dict:
    """The run settings a verdicts file was written with ({} if none, or if they are not a JSON object)."""
    import pyarrow.parquet as pq

    raw = (pq.read_metadata(path).metadata or {}).get(RUN.encode())
    try:
        settings = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}


def read(path: Path, columns: list[str] | None = None) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns).to_pylist()
