"""The enhanced dataset (captions below a score replaced by the recaption) and the kept-keys list.

The enhanced copy of a shard has the input's own format and file name, under `--enhanced-output`,
written by its format's `write_enhanced` (`runtime.data.formats`):
a caption is replaced when the pair's overall score is below the threshold and the model gave a
recaption; every copied pair keeps its input caption (`original_caption`) and score
(`aitqe_overall`) in its .json sidecar (tar) or as columns (Parquet). Pairs that were not scored
(errors) are copied unchanged. The keep list names the keys with overall >= N: DataComp's subset
format (a sorted `.npy` of 128-bit uids as two uint64) when the shards carry uids, else one key per
line in a `.txt`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from runtime.atomic import atomic_path, remove_stale_temporaries
from runtime.data import formats
from runtime.data.records import Shard, ShardError

UID = re.compile(r"^[0-9a-fA-F]{32}$")


def enhanced_path(shard: Shard, folder: Path) -> Path:
    return folder / shard.path.name


def write_enhanced_shard(shard: Shard, rows: list[dict], below: int, folder: Path, opts) -> int:
    """Write the enhanced copy of one shard from its verdict rows; the number of captions replaced."""
    fmt = formats.get(shard.format)
    if fmt.write_enhanced is None:
        raise ShardError(f"{shard.path}: {fmt.title} shards have no enhanced copy; leave out --enhance-below")
    by_key = {r["key"]: r for r in rows}

    def new_caption(key: str) -> tuple[str | None, int | None]:
        r = by_key.get(key)
        if r is None:
            return None, None
        if r["error"] is None and r["overall"] is not None and r["overall"] < below and r["recaption"]:
            return r["recaption"], r["overall"]
        return None, r["overall"]

    final = enhanced_path(shard, folder)
    remove_stale_temporaries(final)
    with atomic_path(final) as tmp:
        return fmt.write_enhanced(shard, tmp, new_caption, opts)


def keep_list_path(folder: Path, above: int, uids: bool) -> Path:
    return folder / f"keep_overall_ge_{above}.{'npy' if uids else 'txt'}"


def write_keep_list(rows: Iterable[dict], above: int, folder: Path) -> tuple[Path, int]:
    """Write the keys (or DataComp uids) of rows scored overall >= above; (path, count)."""
    import numpy as np

    kept = [r for r in rows if r["error"] is None and r["overall"] is not None and r["overall"] >= above]
    uids = bool(kept) and all(r["uid"] is not None and UID.match(r["uid"]) for r in kept)
    path = keep_list_path(folder, above, uids)
    with atomic_path(path) as tmp:
        if uids:
            pairs = sorted((int(r["uid"][:16], 16), int(r["uid"][16:], 16)) for r in kept)
            with open(tmp, "wb") as f:
                np.save(f, np.array(pairs, dtype=np.dtype("u8,u8")))
        else:
            tmp.write_text("".join(f"{r['key']}\n" for r in kept), encoding="utf-8")
    return path, len(kept)
