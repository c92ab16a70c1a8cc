"""A shard's verdicts as Parquet (`SHARD.aitqe.parquet`), one row per input key, written atomically.

Columns: key, uid (DataComp, else null), shard (the input file), overall (int), overall_expected
(float: the probability-weighted score), recaption, overall_explanation, sub_scores (map: aspect
name -> int), sub_scores_expected (map: aspect name -> float), caption_truncated, parse_error, error, model, model_fingerprint, raw_text. Rows are in
the shard's order; join on `key`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from runtime.atomic import atomic_path
from runtime.data.records import Record


def schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()), ("uid", pa.string()), ("shard", pa.string()),
        ("overall", pa.int32()), ("overall_expected", pa.float64()), ("recaption", pa.string()),
        ("overall_explanation", pa.string()), ("sub_scores", pa.map_(pa.string(), pa.int32())),
        ("sub_scores_expected", pa.map_(pa.string(), pa.float64())),
        ("caption_truncated", pa.bool_()), ("parse_error", pa.string()), ("error", pa.string()),
        ("model", pa.string()), ("model_fingerprint", pa.string()), ("raw_text", pa.string()),
    ])


COLUMNS = ("key", "uid", "shard", "overall", "overall_expected", "recaption", "overall_explanation", "sub_scores",
           "sub_scores_expected", "caption_truncated", "parse_error", "error", "model", "model_fingerprint", "raw_text")


def row(record: Record, verdict: object | None, model: str, fingerprint: str) -> dict:
    """One output row: the record's key and, when it was scored, its verdict's fields."""
    out = dict.fromkeys(COLUMNS)
    out.update(key=record.key, uid=record.uid, shard=record.source, model=model, model_fingerprint=fingerprint,
               error=record.error)
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


def write(rows: Iterable[dict], path: Path) -> int:
    """Write rows atomically to `path`; their count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(rows)
    table = pa.Table.from_pylist(rows, schema=schema())
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return len(rows)


def read(path: Path, columns: list[str] | None = None) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns).to_pylist()
