"""Calibration sets: AITQE-format multimodal sequences, provenance, round trip, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from calibration.__main__ import main
from calibration.build import build, calibration_pairs, load, save
from calibration.split import demo_pairs, is_calibration
from runtime.errors import InputError


def demo_world_pairs(n, seed):
    return demo_pairs(n, seed, "calibration")


def test_multimodal_samples_are_the_runtime_prompt_rows(tiny_scorer):
    pairs = demo_world_pairs(3, seed=5)
    cs = build(tiny_scorer, pairs, source="demo", seed=5)
    assert len(cs) == 3 and cs.provenance["count"] == 3
    assert cs.record().pair_ids == tuple(p.id for p in pairs)
    rows = cs.sequences(tiny_scorer.llm.get_input_embeddings())
    for pair, img, ids, row in zip(pairs, cs.image_embeds, cs.token_ids, rows):
        prepared = tiny_scorer.prepare(pair, 384)
        assert ids == prepared.ids
        assert img.shape == (tiny_scorer.image_tokens, tiny_scorer.llm.config.hidden_size)
        expected = tiny_scorer.encode([prepared])[0]
        assert row.shape == expected.shape
        assert torch.allclose(row.float(), expected.float(), rtol=1e-2, atol=1e-2)  # image part stored in bf16


def test_answers_extend_prompts_and_text_only_has_no_image(tiny_scorer):
    pairs = demo_world_pairs(2, seed=1)
    plain = build(tiny_scorer, pairs)
    answered = build(tiny_scorer, pairs, with_answers=True, max_new_tokens=12)
    text = build(tiny_scorer, pairs, text_only=True)
    for p, a in zip(plain.token_ids, answered.token_ids):
        assert a[: len(p)] == p and len(a) > len(p)
    assert all(img is None for img in text.image_embeds) and text.token_ids == plain.token_ids


def test_round_trip_keeps_samples_and_provenance(tiny_scorer, tmp_path):
    cs = build(tiny_scorer, demo_world_pairs(3, seed=2), source="demo-world:seed=2", seed=2)
    back = load(save(cs, tmp_path / "c.safetensors"))
    assert back.provenance == cs.provenance and back.token_ids == cs.token_ids
    assert all(torch.equal(a, b) for a, b in zip(back.image_embeds, cs.image_embeds))
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a readable calibration file"):
        load(tmp_path / "bad.safetensors")


def test_pairs_file_source_takes_calibration_pairs_only(tiny_scorer, image_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    lines = [{"id": i, "image": str(image_dir / f"img{i % 3}.png"), "caption": f"caption {i}"} for i in range(40)]
    pairs.write_text("\n".join(map(json.dumps, lines)) + "\n{broken\n")
    chosen, source = calibration_pairs(pairs, 100, seed=0)
    expected = {i for i in range(40) if is_calibration(i)}
    assert {p.id for p in chosen} == expected and 0 < len(expected) < 40 and source.startswith("pairs:")
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"id": sorted(expected)[0], "image": "nope.png", "caption": "x"}) + "\n")
    with pytest.raises(InputError, match="no usable calibration pairs"):
        build(tiny_scorer, calibration_pairs(missing, 1, 0)[0])


def test_cli_writes_a_loadable_set(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "calib.safetensors"
    assert main(["--model", str(tiny_ckpt), "--output", str(out), "--samples", "4", "--device", "cpu"]) == 0
    assert "4 samples" in capsys.readouterr().out
    cs = load(out)
    assert cs.provenance["source"] == "demo-world:seed=0"
    assert cs.provenance["model_fingerprint"].startswith("sha256:")
