"""The enhanced dataset: a copy of each shard that a training loader can read as it is.

What becomes of each pair is decided once, from its verdict row (`fate`), and written both into
the verdicts (`replaced`, `dropped`) and into the copy:
- a pair that failed (unreadable image, missing caption, any error, no overall score) is dropped,
  unless `--keep-failed` (then it is copied unchanged, where the copy can hold it);
- with `--drop-below N`, a scored pair whose overall is strictly below N is dropped;
- a kept pair scored below `--enhance-below N` with a recaption gets the recaption as its caption.
The copy of a shard has the input's own format and file name, under `--enhanced-output`, written by
its format's `write_enhanced` (`runtime.data.formats`); every copied pair keeps its input caption
(`original_caption`) and score (`aitqe_overall`), in its .json (tar) or as columns (Parquet).
img2dataset's sibling files of a shard are carried into the copy's folder, updated
(`runtime.data.sidecars`), before the copy itself appears under its final name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.atomic import atomic_path, remove_stale_temporaries
from runtime.data import formats, sidecars
from runtime.data.records import Shard, ShardError


@dataclass(frozen=True)
class Fate:
    """What the enhanced copy does with one pair."""

    caption: str | None = None  # the recaption that replaces its caption; None: the caption stays
    overall: int | None = None
    dropped: bool = False


def failed(row: dict) -> bool:
    return row["error"] is not None or row["overall"] is None


def fate(row: dict | None, opts) -> Fate:
    """The pair's fate in the copy, by the rules of the module's docstring (`opts`: RunOptions)."""
    if row is None or failed(row):
        return Fate(None, None if row is None else row["overall"], dropped=not opts.keep_failed)
    overall = row["overall"]
    if opts.drop_below is not None and overall < opts.drop_below:
        return Fate(None, overall, dropped=True)
    low = opts.enhance_below is not None and overall < opts.enhance_below and bool(row["recaption"])
    return Fate(row["recaption"] if low else None, overall)


def mark(rows: list[dict], opts) -> list[dict]:
    """The rows with `replaced` and `dropped` set as the copy will have them (False without a copy)."""
    copying = opts.enhance_below is not None
    for r in rows:
        f = fate(r, opts) if copying else Fate()
        r["replaced"], r["dropped"] = f.caption is not None, f.dropped
    return rows


def enhanced_path(shard: Shard, folder: Path) -> Path:
    return folder / shard.path.name


def write_enhanced_shard(shard: Shard, rows: list[dict], folder: Path, opts) -> tuple[int, int]:
    """Write the enhanced copy of one shard (and its sidecars) from its verdict rows; (captions
    replaced, pairs dropped)."""
    fmt = formats.get(shard.format)
    if fmt.write_enhanced is None:
        raise ShardError(f"{shard.path}: {fmt.title} shards have no enhanced copy; leave out --enhance-below")
    fates = {r["key"]: fate(r, opts) for r in rows}

    def fate_of(key: str) -> Fate:
        return fates.get(key) or fate(None, opts)

    final = enhanced_path(shard, folder)
    remove_stale_temporaries(final)
    with atomic_path(final) as tmp:
        replaced = fmt.write_enhanced(shard, tmp, fate_of, opts)
        dropped = sum(f.dropped for f in fates.values())
        sidecars.carry(shard, folder, fates, {"replaced": replaced, "dropped": dropped,
                                              "enhance_below": opts.enhance_below, "drop_below": opts.drop_below,
                                              "keep_failed": opts.keep_failed})
    return replaced, dropped
