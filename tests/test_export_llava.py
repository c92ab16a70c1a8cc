"""`python -m quantize.export --format llava-hf`: transformers' own LLaVA on the exported folder against
the original AITQE code's recorded outputs (tests/data/faithfulness) and against this runtime.

CPU, fp32, greedy, batch 1 on the LLaVA side, in both modes (stop at `<Overall>` through transformers'
stop strings, and output-all). The prompt ids come from the exported processor's chat template and
the pixels from its image processor, never from this project's prompt or image code.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from bench.eval.pairs import DEMO_SEED
from calibration.split import demo_pairs
from quantize.export import main
from runtime.demo import DEMO_MODEL
from runtime.image import load_image
from runtime.parse import OVERALL_MARK
from runtime.scorer import Scorer

from tests.test_golden import CASES, GOLDEN, MAX_NEW, MODES, image_path

QUICK_PAIRS = 25
ALL_PAIRS = 100


def export_to(src, out) -> None:
    assert main(["--model", str(src), "--format", "llava-hf", "--output", str(out)]) == 0


def load(folder):
    model, info = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval(), AutoProcessor.from_pretrained(folder)


def inputs(processor, image, caption: str):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": caption}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=image, text=text, return_tensors="pt")


@torch.inference_mode()
def generate(model, processor, enc, output_all: bool, max_new: int) -> list[int]:
    out = model.generate(**enc, do_sample=False, max_new_tokens=max_new, tokenizer=processor.tokenizer,
                         stop_strings=None if output_all else [OVERALL_MARK])
    return out[0, enc["input_ids"].shape[1]:].tolist()


def text_of(processor, ids: list[int], output_all: bool) -> str:
    """What a LLaVA user reads: the new ids decoded, cut after the stop string in the default mode."""
    text = processor.tokenizer.decode(ids, skip_special_tokens=True)
    at = -1 if output_all else text.find(OVERALL_MARK)
    return text if at < 0 else text[: at + len(OVERALL_MARK)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    export_to(DEMO_MODEL, root / "demo")
    export_to(GOLDEN / "checkpoint", root / "golden")
    return root


@pytest.fixture(scope="module")
def demo_llava(exported):
    return load(exported / "demo")


@pytest.fixture(scope="module")
def demo_scorer():
    return Scorer.from_pretrained(DEMO_MODEL, device="cpu", dtype="fp32")


def test_export_says_where_the_image_token_lives(exported):
    demo = json.loads((exported / "demo" / "aitqe_export.json").read_text())
    golden = json.loads((exported / "golden" / "aitqe_export.json").read_text())
    assert demo["image_token_id"] == 1027 and demo["image_token_row"].startswith("spare embedding row 1027")
    assert golden["image_token_id"] == 768 and "resized from 768 to 769" in golden["image_token_row"]
    config = json.loads((exported / "golden" / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == 769 and config["image_token_index"] == 768
    source = json.loads((GOLDEN / "checkpoint" / "config.json").read_text())
    assert config["text_config"]["rope_theta"] == source["rope_theta"]  # what transformers 4.x (vLLM) reads


def test_golden_ids_pixels_and_greedy_ids_equal_the_originals(exported):
    """All 35 recorded cases: the processor's ids and pixels are the original's, and LLaVA's greedy ids
    are the original's in both modes (the runtime's too: tests/test_golden.py holds it to the same record)."""
    model, processor = load(exported / "golden")
    pixels = np.load(GOLDEN / "pixels.npz")
    image_id = model.config.image_token_index
    for case in CASES:
        enc = inputs(processor, load_image(image_path(case)), case["caption"])
        assert enc["input_ids"][0].tolist() == [image_id if t == -1 else t for t in case["input_ids"]], case["id"]
        assert np.abs(enc["pixel_values"].numpy() - pixels[case["image"]]).max() < 1e-6, case["id"]
        for mode, output_all in MODES.items():
            assert generate(model, processor, enc, output_all, MAX_NEW) == case[f"new_ids_{mode}"], (case["id"], mode)


def compare_with_runtime(scorer, model, processor, pairs) -> None:
    """Per pair and mode: the same prompt ids, the same greedy new ids, the same parsed verdict."""
    prepared = [scorer.prepare(p, 384) for p in pairs]
    image_id = model.config.image_token_index
    for output_all in (False, True):
        ours = []
        for i in range(0, len(prepared), 16):
            decoded = scorer.decode(scorer.encode(prepared[i:i + 16]), output_all=output_all, max_new_tokens=384)
            ours += zip(decoded.ids, decoded.texts)
        for pair, prep, (expected, expected_text) in zip(pairs, prepared, ours):
            enc = inputs(processor, pair.image, pair.caption)
            assert enc["input_ids"][0].tolist() == [image_id] * scorer.image_tokens + prep.ids, pair.id
            assert torch.equal(enc["pixel_values"][0], prep.pixels), pair.id
            ids = generate(model, processor, enc, output_all, 384)
            assert ids == expected, (pair.id, output_all)
            verdict = Scorer.parse(text_of(processor, ids, output_all), output_all)
            assert verdict == Scorer.parse(expected_text, output_all) and verdict["overall_score"] is not None, pair.id


def test_demo_heldout_pairs_give_the_runtimes_ids_and_verdicts(demo_llava, demo_scorer):
    compare_with_runtime(demo_scorer, *demo_llava, demo_pairs(QUICK_PAIRS, DEMO_SEED, "evaluation"))


@pytest.mark.slow
def test_demo_100_heldout_pairs_give_the_runtimes_ids_and_verdicts(demo_llava, demo_scorer):
    compare_with_runtime(demo_scorer, *demo_llava, demo_pairs(ALL_PAIRS, DEMO_SEED, "evaluation"))


def merged_newline_checkpoint(dest):
    """The demo checkpoint whose tokenizer also merges "\\n\\n" into one token (as Qwen2's does), in every
    tokenizer file; its weights have spare rows for the new token."""
    shutil.copytree(DEMO_MODEL, dest)
    tok = json.loads((dest / "tokenizer.json").read_text(encoding="utf-8"))
    new_id = max(t["id"] for t in tok["added_tokens"]) + 1
    tok["model"]["vocab"]["ĊĊ"] = new_id
    merges = tok["model"]["merges"]
    merges.append(["Ċ", "Ċ"] if merges and isinstance(merges[0], list) else "Ċ Ċ")
    (dest / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    vocab = json.loads((dest / "vocab.json").read_text(encoding="utf-8"))
    (dest / "vocab.json").write_text(json.dumps({**vocab, "ĊĊ": new_id}, ensure_ascii=False), encoding="utf-8")
    with (dest / "merges.txt").open("a", encoding="utf-8") as f:
        f.write("Ċ Ċ\n")
    return new_id


def test_separate_newline_tokens_survive_a_merging_vocabulary(tmp_path, demo_llava):
    """Where the vocabulary merges "\\n\\n", the runtime still has two "\\n" tokens after the image; so
    do the exported processor's ids (a plain processor would give the merged token)."""
    merged_id = merged_newline_checkpoint(merged := tmp_path / "merged")
    scorer = Scorer.from_pretrained(merged, device="cpu", dtype="fp32")
    assert scorer.tokenizer("\n\n", add_special_tokens=False)["input_ids"] == [merged_id]
    export_to(merged, tmp_path / "llava")
    model, processor = load(tmp_path / "llava")
    captions = ["big red cross top right", "two lines\n\nof caption \n\n end", " \n\n", ""]
    for pair, caption in zip(demo_pairs(len(captions), DEMO_SEED, "evaluation"), captions):
        prep = scorer.prepare(pair.__class__(pair.image, caption), 384)
        assert prep.ids[:2] == [198, 198]
        enc = inputs(processor, pair.image, caption)
        assert enc["input_ids"][0].tolist() == [model.config.image_token_index] * scorer.image_tokens + prep.ids
    assert merged_id in prep.ids or merged_id in scorer.prepare(pair.__class__(pair.image, captions[1]), 384).ids
    plain = demo_llava[1].tokenizer.__class__.from_pretrained(merged)  # the checkpoint's own tokenizer, no rule
    assert plain("\n\nEvaluate", add_special_tokens=False)["input_ids"][0] == merged_id


def test_round_trip_through_transformers_save_pretrained(tmp_path, demo_llava, demo_scorer):
    model, processor = demo_llava
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    compare_with_runtime(demo_scorer, *load(tmp_path / "saved"), demo_pairs(4, DEMO_SEED, "evaluation"))


@pytest.mark.parametrize("field, value", [("mm_projector_type", "resampler"), ("pooling_kernel", 2),
                                          ("image_aspect_ratio", "pad")])
def test_unmappable_checkpoints_are_refused_naming_the_field(tmp_path, capsys, field, value):
    src = tmp_path / "ckpt"
    shutil.copytree(GOLDEN / "checkpoint", src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, field: value}))
    assert main(["--model", str(src), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and field in err and "cannot be exported as LLaVA" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_sharded_export_loads_and_gives_the_runtimes_ids(tmp_path, monkeypatch, demo_scorer):
    monkeypatch.setattr("quantize.llava_export.SHARD_BYTES", 2 << 20)
    export_to(DEMO_MODEL, tmp_path / "sharded")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    compare_with_runtime(demo_scorer, *load(tmp_path / "sharded"), demo_pairs(2, DEMO_SEED, "evaluation"))


def test_existing_output_is_kept_without_force(exported, capsys):
    before = (exported / "demo" / "config.json").read_bytes()
    assert main(["--model", str(DEMO_MODEL), "--output", str(exported / "demo")]) == 1
    assert "--force" in capsys.readouterr().err
    assert (exported / "demo" / "config.json").read_bytes() == before
