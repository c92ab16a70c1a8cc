"""`--ray` on a local Ray cluster (this CPU, 2 scorer actors, the demo model) writes the same
per-shard rows and enhanced shards as a single-process run."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from runtime.demo.shards import pairs, write_webdataset
from runtime.score import main

ray = pytest.importorskip("ray")


def outputs(out, enhanced) -> tuple[dict, dict]:
    rows = {p.name: pq.read_table(p).to_pylist() for p in sorted(out.glob("*.aitqe.parquet"))}
    return rows, {p.name: p.read_bytes() for p in sorted(enhanced.glob("*.tar"))}


@pytest.mark.slow  # 16-35 s here (by load): a Ray cluster starts, two actors load the model
def test_ray_actors_give_the_same_rows_as_one_process(tmp_path):
    folder = tmp_path / "in"
    for s in range(4):
        write_webdataset(folder, s, pairs(s, 6))
    common = ["--model", "demo", "--device", "cpu", "--quiet", "--batch-size", "4", "--enhance-below", "6", "--input", str(folder)]
    assert main([*common, "--output", str(tmp_path / "one"), "--enhanced-output", str(tmp_path / "one-enh")]) == 0
    try:
        assert main([*common, "--output", str(tmp_path / "ray"), "--enhanced-output", str(tmp_path / "ray-enh"),
                     "--ray", "--num-gpus", "2"]) == 0
    finally:
        ray.shutdown()
    single, on_ray = outputs(tmp_path / "one", tmp_path / "one-enh"), outputs(tmp_path / "ray", tmp_path / "ray-enh")
    assert len(single[0]) == 4 and sum(len(r) for r in single[0].values()) == 24
    assert on_ray == single
