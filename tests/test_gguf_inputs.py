"""Every input path with a GGUF export: the same pairs as a JSONL pairs file, as Parquet shards, and
as Parquet shards over Ray actors (`--ray --device cpu`, two actors on this CPU) give the same
verdicts (overall score, recaption, error; expected scores within 0.01: rows batched together
differ between the paths) from llama.cpp."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
pq = pytest.importorskip("pyarrow.parquet")

from runtime.demo.shards import pairs, write_parquet  # noqa: E402
from runtime.score import main as score_main  # noqa: E402
from tests.test_gguf_llama_cpp import demo_f16  # noqa: E402,F401

SHARDS = 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """(folder of Parquet shards, the same pairs as a JSONL pairs file of image files)."""
    root = tmp_path_factory.mktemp("inputs")
    lines = []
    for s in range(SHARDS):
        rows = pairs(s, 4)
        write_parquet(root / "shards", s, rows)
        for r in rows:
            image = root / "images" / f"{r['key']}.jpg"
            image.parent.mkdir(exist_ok=True)
            image.write_bytes(r["jpg"])
            lines.append(json.dumps({"id": r["key"], "image": str(image), "caption": r["caption"]}) + "\n")
    (root / "pairs.jsonl").write_text("".join(lines))
    return root / "shards", root / "pairs.jsonl"


def score(model, input, output, *extra) -> None:
    assert score_main(["--model", str(model), "--input", str(input), "--output", str(output), "--threads", "1",
                       "--batch-size", "4", "--quiet", *extra]) == 0


@pytest.fixture(scope="module")
def jsonl_verdicts(demo_f16, inputs, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("jsonl") / "out.jsonl"
    score(demo_f16, inputs[1], out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 * SHARDS
    return {r["id"]: (r["overall_score"], r["recaption"], r["error"], r["overall_expected"]) for r in records}


def shard_verdicts(folder) -> dict:
    rows = [r for p in sorted(folder.glob("*.aitqe.parquet")) for r in pq.read_table(p).to_pylist()]
    return {r["key"]: (r["overall"], r["recaption"], r["error"], r["overall_expected"]) for r in rows}


def same(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    assert {k: v[:3] for k, v in ours.items()} == {k: v[:3] for k, v in theirs.items()}
    assert all(v[1] is not None or v[0] is not None for v in ours.values())
    for k, v in ours.items():
        if theirs[k][3] is not None:
            assert v[3] == pytest.approx(theirs[k][3], abs=0.01), k


def test_parquet_shards_give_the_jsonl_verdicts(demo_f16, inputs, jsonl_verdicts, tmp_path):  # noqa: F811
    score(demo_f16, inputs[0], tmp_path / "out")
    same(shard_verdicts(tmp_path / "out"), jsonl_verdicts)


@pytest.mark.slow  # a Ray cluster starts, two actors load llama.cpp: 100 s here (under load)
def test_ray_actors_give_the_jsonl_verdicts(demo_f16, inputs, jsonl_verdicts, tmp_path):  # noqa: F811
    ray = pytest.importorskip("ray")
    try:
        score(demo_f16, inputs[0], tmp_path / "out", "--ray", "--device", "cpu", "--num-gpus", "2")
    finally:
        ray.shutdown()
    same(shard_verdicts(tmp_path / "out"), jsonl_verdicts)
