"""img2dataset's files beside a shard, carried into the enhanced copy's folder and updated to match it.

- `SHARD.parquet` beside a `SHARD.tar` (the shard's metadata, one row per key): the rows of the
  pairs dropped from the copy are removed and the `caption` column holds the copy's captions.
- `SHARD_stats.json`: `count`, `successes` and `status_dict.success` lose the dropped pairs, and an
  `aitqe` section says what the copy changed (source successes, replaced, dropped, the settings).
Each is written atomically; a file that cannot be parsed is copied as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runtime.atomic import atomic_path
from runtime.data.records import Shard


def stats_path(shard: Shard) -> Path:
    return shard.path.with_name(f"{shard.name}_stats.json")


def _metadata(src: Path, dest: Path, fates: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    if "key" in table.column_names:
        keys = [str(k) for k in table.column("key").to_pylist()]
        table = table.filter(pa.array([not (k in fates and fates[k].dropped) for k in keys]))
        if "caption" in table.column_names and pa.types.is_string(table.schema.field("caption").type):
            kept = [k for k in keys if not (k in fates and fates[k].dropped)]
            old = table.column("caption").to_pylist()
            new = [fates[k].caption if k in fates and fates[k].caption is not None else c for k, c in zip(kept, old)]
            i = table.schema.get_field_index("caption")
            table = table.set_column(i, table.schema.field(i), pa.array(new, pa.string()))
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp)


def _stats(src: Path, dest: Path, summary: dict) -> None:
    try:
        stats = json.loads(src.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        stats = None
    with atomic_path(dest) as tmp:
        if not isinstance(stats, dict):
            shutil.copyfile(src, tmp)
            return
        dropped = summary["dropped"]
        source = stats.get("successes")
        for part, name in ((stats, "count"), (stats, "successes"), (stats.get("status_dict"), "success")):
            if isinstance(part, dict) and isinstance(part.get(name), int):
                part[name] = max(0, part[name] - dropped)
        stats["aitqe"] = {"source_successes": source, **summary}
        tmp.write_text(json.dumps(stats, indent=4, ensure_ascii=False), encoding="utf-8")


def carry(shard: Shard, folder: Path, fates: dict, summary: dict) -> None:
    """Write the shard's sidecars into `folder`, updated for the copy (`fates`: key -> Fate)."""
    if shard.meta is not None and shard.meta.is_file():
        _metadata(shard.meta, folder / shard.meta.name, fates)
    if stats_path(shard).is_file():
        _stats(stats_path(shard), folder / stats_path(shard).name, summary)
