"""Keep lists: the pairs of a run's verdicts whose overall score lies in a range, written in one of
three formats. One code for `python -m runtime.select` and `runtime.score --keep-min-overall`.

Bounds are inclusive (`min_overall <= overall <= max_overall`); a row without an overall (an error,
an unparsed verdict) is never inside a bound, and with no bound at all every row is selected
unless `exclude_failed`. Formats:
- `datacomp-npy`: DataComp's subset file, the sorted 128-bit uids as a structured array of two
  uint64 (every selected row needs a 32-hex-digit uid);
- `keys`: one key per line, in the order of the verdicts (shard file names sorted, then rows);
- `parquet`: the columns key, uid, shard, overall of the selected rows.
A keep list never goes inside the verdicts folder, which holds only verdict files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from runtime.atomic import atomic_path
from runtime.data import verdicts
from runtime.data.records import OUTPUT_SUFFIX
from runtime.errors import InputError

FORMATS = ("datacomp-npy", "keys", "parquet")
UID = re.compile(r"^[0-9a-fA-F]{32}$")
NEEDED = ["key", "uid", "shard", "overall", "error"]


def verdict_files(folder: Path) -> list[Path]:
    """The complete verdicts files of a folder, sorted by name; a one-line InputError for anything else."""
    if not folder.is_dir():
        raise InputError(f"--verdicts {folder}: no such folder; pass the --output folder of a shard run")
    files = sorted(folder.glob(f"*{OUTPUT_SUFFIX}"))
    if not files:
        raise InputError(f"--verdicts {folder}: no *{OUTPUT_SUFFIX} files; pass the --output folder of a shard run")
    for f in files:
        if not verdicts.complete(f):
            raise InputError(f"{f}: not a complete verdicts file; rerun the scoring to finish it")
    return files


def rows_of(files: list[Path]) -> Iterator[dict]:
    for f in sorted(files, key=lambda p: p.name):
        yield from verdicts.read(f, NEEDED)


def select(rows: Iterable[dict], min_overall: int | None = None, max_overall: int | None = None,
           exclude_failed: bool = False) -> list[dict]:
    """The rows with min_overall <= overall <= max_overall (inclusive; see the module's docstring)."""
    bounded = min_overall is not None or max_overall is not None
    out = []
    for r in rows:
        scored = r["error"] is None and r["overall"] is not None
        if bounded and not scored or exclude_failed and not scored:
            continue
        if scored and (min_overall is not None and r["overall"] < min_overall
                       or max_overall is not None and r["overall"] > max_overall):
            continue
        out.append(r)
    return out


def has_uids(rows: list[dict]) -> bool:
    return bool(rows) and all(r["uid"] is not None and UID.match(r["uid"]) for r in rows)


def default_format(rows: list[dict]) -> str:
    """`datacomp-npy` when every row has a DataComp uid, else `keys`."""
    return "datacomp-npy" if has_uids(rows) else "keys"


def write(rows: list[dict], path: Path, fmt: str) -> int:
    """Write the selected rows' keep list to `path` (atomically) in format `fmt`; their count."""
    if fmt == "datacomp-npy" and rows and not has_uids(rows):
        bad = next(r for r in rows if not (r["uid"] and UID.match(r["uid"])))
        raise InputError(f"--format datacomp-npy: key {bad['key']} has no DataComp uid (32 hex digits); "
                         "use --format keys or parquet")
    with atomic_path(path) as tmp:
        if fmt == "datacomp-npy":
            import numpy as np

            pairs = sorted((int(r["uid"][:16], 16), int(r["uid"][16:], 16)) for r in rows)
            with open(tmp, "wb") as f:
                np.save(f, np.array(pairs, dtype=np.dtype("u8,u8")))
        elif fmt == "keys":
            tmp.write_text("".join(f"{r['key']}\n" for r in rows), encoding="utf-8")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            cols = {"key": pa.string(), "uid": pa.string(), "shard": pa.string(), "overall": pa.int32()}
            pq.write_table(pa.Table.from_pylist([{c: r[c] for c in cols} for r in rows], schema=pa.schema(cols)), tmp)
    return len(rows)


def check_outside(path: Path, folder: Path, flag: str) -> None:
    """Refuse a keep list inside the verdicts folder (one line)."""
    if folder.resolve() in path.resolve().parents:
        raise InputError(f"{flag} {path}: inside the verdicts folder {folder}, which holds only verdict files "
                         "(so pandas and duckdb read it whole); write the keep list elsewhere")


def bounds(min_overall: int | None, max_overall: int | None) -> str:
    """`overall >= 6`, `4 <= overall <= 6`, ... for messages."""
    if min_overall is not None and max_overall is not None:
        return f"{min_overall} <= overall <= {max_overall}"
    if min_overall is not None:
        return f"overall >= {min_overall}"
    return f"overall <= {max_overall}" if max_overall is not None else "every row"
