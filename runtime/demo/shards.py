"""Shards of demo-world pairs in img2dataset's layouts, to try and test the dataset commands:
`python -m runtime.demo.shards DIR [--format webdataset|parquet] [--shards N] [--pairs M]`.

WebDataset: `00000.tar` with `KEY.jpg`, `KEY.txt`, `KEY.json` (key, caption, status, uid) and the
sibling metadata `00000.parquet` (one row per key, plus a failed download that is not in the tar),
as img2dataset writes them. Parquet: `00000.parquet` with `key`, `uid`, `jpg` (bytes), `txt`.
KEY = 5-digit shard number + 4-digit index; uids are 32 hex digits (DataComp's form).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

from runtime.demo.world import IMAGE_SIZE, make_example

SEED = 7


def pairs(shard: int, n: int, seed: int = SEED, size: int = IMAGE_SIZE) -> list[dict]:
    """Pairs of one shard: key, uid, caption, JPEG bytes (images `size` px square)."""
    out = []
    for i in range(n):
        ex = make_example(seed, shard * 10_000 + i, size)
        buf = io.BytesIO()
        ex.image.save(buf, format="JPEG", quality=95)
        key = f"{shard:05d}{i:04d}"
        out.append({"key": key, "uid": hashlib.md5(f"{seed}:{key}".encode()).hexdigest(),
                    "caption": ex.caption, "jpg": buf.getvalue()})
    return out


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
    tf.addfile(info, io.BytesIO(data))


def write_webdataset(folder: Path, shard: int, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{shard:05d}.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for r in rows:
            meta = {"key": r["key"], "uid": r["uid"], "caption": r["caption"], "status": "success"}
            _add(tf, f"{r['key']}.jpg", r["jpg"])
            _add(tf, f"{r['key']}.txt", r["caption"].encode("utf-8"))
            _add(tf, f"{r['key']}.json", json.dumps(meta).encode("utf-8"))
    failed = {"key": f"{shard:05d}9999", "uid": None, "caption": "a failed download", "status": "failed_to_download"}
    meta_rows = [{"key": r["key"], "uid": r["uid"], "caption": r["caption"], "status": "success"} for r in rows]
    pq.write_table(pa.Table.from_pylist(meta_rows + [failed]), folder / f"{shard:05d}.parquet")
    return path


def write_parquet(folder: Path, shard: int, rows: list[dict], row_group_size: int = 64) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{shard:05d}.parquet"
    table = pa.Table.from_pylist([{"key": r["key"], "uid": r["uid"], "jpg": r["jpg"], "txt": r["caption"]}
                                  for r in rows])
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.demo.shards", description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--format", choices=["webdataset", "parquet"], default="webdataset")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--pairs", type=int, default=50, help="pairs per shard")
    args = p.parse_args(argv)
    write = write_webdataset if args.format == "webdataset" else write_parquet
    for s in range(args.shards):
        print(write(Path(args.folder), s, pairs(s, args.pairs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
