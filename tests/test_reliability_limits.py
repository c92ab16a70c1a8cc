"""Memory is bounded by configuration, not by the input: each hostile dataset case is read in a fresh
process whose address space is capped (`resource.setrlimit(RLIMIT_AS)`, a few hundred MB over what the
imports took), and must end in an error record for the hostile key, not a MemoryError or a kill.
Seconds each; the hostile files are sparse or compress well, so they are small on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64

READ_CAPPED = """
import json, resource, sys
from pathlib import Path
from runtime.data.formats import formats, pairs_format, shard_of
from runtime.data.run import RunOptions
import numpy, pyarrow  # what the reading imports lazily, loaded before the cap
formats()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + int(sys.argv[2]) * 2**20,) * 2)
path = Path(sys.argv[1])
shard = pairs_format(path).shard(path) if path.suffix in (".jsonl", ".csv") else shard_of(path)
fmt = [f for f in formats() if f.name == shard.format][0]
rows = [(r.key, r.error) for r in fmt.read(shard, RunOptions(output=path.parent))]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"rows": rows, "peak_mb": peak, "base_mb": base}))
"""


def read_capped(path: Path, cap_mb: int = 300) -> dict:
    """The records of `path` (key, error), read under a memory cap of `cap_mb` over the imports."""
    # the system allocator: jemalloc and mimalloc reserve address space that an RLIMIT_AS cap would count
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ARROW_DEFAULT_MEMORY_POOL": "system",
           "MALLOC_ARENA_MAX": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", READ_CAPPED, str(path), str(cap_mb)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_tar_member_declaring_2_gb_is_refused_before_it_is_read(tmp_path):
    (tmp_path / "000.jpg").write_bytes(b"")
    os.truncate(tmp_path / "000.jpg", 2 << 30)  # sparse: 2 GB declared, nothing on disk
    (tmp_path / "000.txt").write_text("a sparse image")
    (tmp_path / "001.jpg").write_bytes(PNG)
    (tmp_path / "001.txt").write_text("a small one")
    subprocess.run(["tar", "--sparse", "-cf", "shard.tar", "000.jpg", "000.txt", "001.jpg", "001.txt"],
                   cwd=tmp_path, check=True)
    assert (tmp_path / "shard.tar").stat().st_size < 1 << 20
    got = read_capped(tmp_path / "shard.tar")
    (k0, e0), (k1, e1) = got["rows"]
    assert (k0, k1) == ("000", "001") and "--max-member-bytes" in e0 and e1 is None
    assert got["peak_mb"] - got["base_mb"] < 100, got


def _parquet(path: Path, rows: dict, row_group_size: int | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(rows), path, row_group_size=row_group_size, compression="zstd")


def test_a_200_mb_parquet_cell_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "cells.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetWriter(big, pa.schema([("key", pa.string()), ("jpg", pa.binary()), ("txt", pa.string())]),
                          compression="zstd") as w:
        w.write_table(pa.table({"key": ["small"], "jpg": [PNG], "txt": ["ok"]}))
        w.write_table(pa.table({"key": ["huge"], "jpg": [bytes(200 << 20)], "txt": ["a 200 MB cell"]}))
        w.write_table(pa.table({"key": ["after"], "jpg": [PNG], "txt": ["ok"]}))
    got = read_capped(big)
    assert [k for k, _ in got["rows"]] == ["small", "huge", "after"]
    errors = dict(got["rows"])
    assert errors["small"] is None and errors["after"] is None and "--max-member-bytes" in errors["huge"]


def test_a_large_row_group_is_read_in_bounded_batches(tmp_path):
    n = 40_000
    rows = {"key": [f"{i:06d}" for i in range(n)], "jpg": [os.urandom(4096) for _ in range(n)], "txt": ["c"] * n}
    _parquet(tmp_path / "rows.parquet", rows, row_group_size=n)  # one row group of 160 MB
    got = read_capped(tmp_path / "rows.parquet", cap_mb=150)
    assert len(got["rows"]) == n and not any(e for _, e in got["rows"])


def test_a_15_mb_caption_in_jsonl_is_an_error_record(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    lines = [{"id": 1, "image": "a.png", "caption": "x" * (15 << 20)}, {"id": 2, "image": "a.png", "caption": "ok"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (k1, e1), (k2, e2) = read_capped(tmp_path / "pairs.jsonl")["rows"]
    assert "--max-caption-chars" in e1 and e2 is None


def test_a_20_mb_caption_in_parquet_is_an_error_record(tmp_path):
    _parquet(tmp_path / "cap.parquet", {"key": ["long", "short"], "jpg": [PNG, PNG], "txt": ["y" * (20 << 20), "ok"]})
    assert (tmp_path / "cap.parquet").stat().st_size < 1 << 20
    (k1, e1), (k2, e2) = read_capped(tmp_path / "cap.parquet")["rows"]
    assert (k1, k2) == ("long", "short") and "--max-caption-chars" in e1 and e2 is None


def test_a_caption_over_the_byte_limit_is_an_error_record_in_tars_too(tmp_path):
    from runtime.data.limits import Limits
    from runtime.data.records import Shard
    from runtime.data.webdataset_tar import read_shard

    with tarfile.open(tmp_path / "s.tar", "w") as tf:
        for name, data in (("0.jpg", PNG), ("0.txt", "é".encode() * 600), ("1.jpg", PNG), ("1.txt", b"fine")):
            (tmp_path / name).write_bytes(data)
            tf.add(tmp_path / name, name)
    got = list(read_shard(Shard(tmp_path / "s.tar", "webdataset"), limits=Limits(caption_bytes=1000)))
    assert "--max-caption-bytes" in got[0].error and got[1].error is None


@pytest.mark.parametrize("flag, value", [("--max-caption-chars", "10"), ("--max-caption-bytes", "10")])
def test_the_caption_limits_are_flags_of_the_batch_command(tmp_path, flag, value):
    from runtime.launch.cli import options
    from runtime.score import parse_args

    (tmp_path / "pairs.jsonl").write_text("")
    args = parse_args(["--input", str(tmp_path / "pairs.jsonl"), "--output", str(tmp_path / "o.jsonl"), flag, value])
    limits = options(args).limits
    assert (limits.caption_chars if flag.endswith("chars") else limits.caption_bytes) == 10
