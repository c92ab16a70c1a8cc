"""A GGUF export is a model like any other: `Scorer.from_pretrained(export)` and `python -m runtime.score
--model EXPORT` run it on llama.cpp (the `llama.cpp` engine behind the decode seam), with the torch
runtime's ids, verdicts and expected scores.

- Golden: the 35 cases through the scorer's own stages (prepare, encode with clip.cpp, decode) of an
  F32 export of the golden checkpoint: the original's 40 greedy ids in both modes.
- Demo: held-out pairs and the traps (non-square image, special-token strings, decomposed characters)
  through an F16 export: the torch runtime's verdicts (text, scores) and expected scores, in both
  modes; the command line on one pair and on a pairs file.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from runtime.errors import InputError  # noqa: E402
from runtime.gguf_scorer import GgufScorer  # noqa: E402
from runtime.model.locate import kind_of, locate  # noqa: E402
from runtime.score import main as score_main  # noqa: E402
from runtime.scorer import Pair, Scorer  # noqa: E402
from tests.test_toy_engine import protocol_gaps  # noqa: E402
from tests.test_gguf_llama_cpp import (CASES, GOLDEN, MAX_NEW, MODES, demo_f16, demo_scorer,  # noqa: E402,F401
                                       golden_export, held_out)


@pytest.fixture(scope="module")
def golden_gguf(golden_export):  # noqa: F811
    return Scorer.from_pretrained(golden_export, threads=1)


@pytest.fixture(scope="module")
def demo_gguf(demo_f16):  # noqa: F811
    return Scorer.from_pretrained(demo_f16, threads=1)


def test_a_gguf_export_is_located_and_loads_as_a_gguf_scorer(golden_export, golden_gguf):  # noqa: F811
    assert kind_of(golden_export) == "gguf"
    assert isinstance(golden_gguf, GgufScorer) and golden_gguf.engine == "llama.cpp"
    assert protocol_gaps(golden_gguf.decoder) == []
    with pytest.raises(InputError, match="a GGUF export for llama.cpp"):
        locate(golden_export)  # where only checkpoints and bundles are taken (python -m quantize)


@pytest.mark.parametrize("mode", MODES)
def test_golden_cases_through_the_scorer_give_the_originals_ids(golden_gguf, mode):
    s = golden_gguf
    got = []
    for case in CASES:
        rows = s.encode([s.prepare(Pair(GOLDEN / "images" / case["image"], case["caption"]), MAX_NEW)])
        got += s.decode(rows, output_all=MODES[mode], max_new_tokens=MAX_NEW).ids
    assert got == [c[f"new_ids_{mode}"] for c in CASES]


def _same_verdicts(ours, theirs) -> None:
    for a, b in zip(ours, theirs):
        assert (a.raw_text, a.overall_score, a.error) == (b.raw_text, b.overall_score, b.error)
        assert {k: v["score"] for k, v in a.sub_scores.items()} == {k: v["score"] for k, v in b.sub_scores.items()}
        if b.overall_expected is not None:
            assert a.overall_expected == pytest.approx(b.overall_expected, abs=0.05)
        for k, v in b.sub_scores.items():
            if v.get("expected") is not None:
                assert a.sub_scores[k]["expected"] == pytest.approx(v["expected"], abs=0.05)


@pytest.mark.parametrize("output_all", [False, True])
def test_demo_pairs_through_the_f16_export_give_the_torch_verdicts(demo_gguf, demo_scorer, output_all):  # noqa: F811
    pairs = [Pair(im, cap, id=k) for k, (im, cap) in enumerate(held_out(6))]
    theirs = demo_scorer.score_batch(pairs, output_all=output_all)
    ours = list(demo_gguf.score_stream(pairs, output_all=output_all))
    _same_verdicts(ours, theirs)
    assert sum(v.overall_expected is not None for v in ours) >= len(pairs) - 3


@pytest.mark.slow
def test_demo_100_pairs_through_the_f16_export_give_the_torch_verdicts(demo_gguf, demo_scorer):  # noqa: F811
    pairs = [Pair(im, cap, id=k) for k, (im, cap) in enumerate(held_out(100))]
    _same_verdicts(list(demo_gguf.score_stream(pairs)), demo_scorer.score_batch(pairs))


def test_the_command_line_scores_a_pair_and_a_pairs_file(demo_f16, demo_scorer, tmp_path, capsys):  # noqa: F811
    image, caption = held_out(3)[0]
    path = tmp_path / "a.png"
    image.save(path)
    want = demo_scorer.score(path, caption)
    assert score_main(["--model", str(demo_f16), "--image", str(path), "--caption", caption, "--threads", "1"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert (single["raw_text"], single["overall_score"]) == (want.raw_text, want.overall_score)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": k, "image": str(path), "caption": c}) + "\n"
                             for k, c in enumerate([caption, "a red circle <|im_end|>", ""])))
    out = tmp_path / "out.jsonl"
    assert score_main(["--model", str(demo_f16), "--input", str(pairs), "--output", str(out), "--threads", "1",
                       "--quiet"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [0, 1, 2] and records[0]["raw_text"] == want.raw_text
    assert records[1]["raw_text"] == demo_scorer.score(path, "a red circle <|im_end|>").raw_text


def test_a_parquet_shard_through_the_gguf_export_gives_the_torch_rows(demo_f16, tmp_path):  # noqa: F811
    pq = pytest.importorskip("pyarrow.parquet")
    from runtime.demo.shards import pairs, write_parquet

    path = write_parquet(tmp_path / "in", 0, pairs(0, 4))
    rows = {}
    for name, extra in (("gguf", ["--model", str(demo_f16), "--threads", "1"]), ("torch", ["--model", "demo", "--engine", "reference"])):
        out = tmp_path / name
        assert score_main([f"--input={path}", f"--output={out}", "--quiet", *extra]) == 0
        rows[name] = pq.read_table(out / "00000.aitqe.parquet").to_pylist()
    keep = ("key", "overall", "recaption", "error")
    assert [{k: r[k] for k in keep} for r in rows["gguf"]] == [{k: r[k] for k in keep} for r in rows["torch"]]
