"""Bundles: dense, bitsandbytes and GPTQ backbones on a tiny fixture, refused bundles, save -> load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from quantize.__main__ import main
from runtime.errors import InputError
from runtime.formats.manifest import read_manifest
from runtime.scorer import Pair, Scorer
from tests.conftest import altered_copy

CAPTION = "a big green square top right and a small red cross on the left"


def sqnr(ref: torch.Tensor, test: torch.Tensor) -> float:
    ref, test = ref.double(), test.double()
    return 20 * math.log10(ref.norm() / (ref - test).norm())


@pytest.fixture(scope="module")
def bundles(tiny_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for method, extra in (("bf16", []), ("bnb-int8", []), ("bnb-nf4", []),
                          ("gptq-int8", ["--group-size", "32", "--calibration-samples", "16"]),
                          ("gptq-int4", ["--group-size", "32", "--calibration-samples", "16"])):
        assert main(["--model", str(tiny_ckpt), "--method", method, "--output", str(root / method), *extra]) == 0
        out[method] = root / method
    return out


@torch.inference_mode()
def prompt_logits(scorer: Scorer, image) -> torch.Tensor:
    row = scorer.encode([scorer.prepare(Pair(image, CAPTION), 384)])[0]
    return scorer.llm(inputs_embeds=row[None].to(scorer.llm.dtype)).logits[0].float()


def test_bf16_bundle_reproduces_the_checkpoint(bundles, tiny_scorer, image_dir):
    scorer = Scorer.from_pretrained(bundles["bf16"], device="cpu")
    image = image_dir / "img0.png"
    assert torch.equal(prompt_logits(scorer, image), prompt_logits(tiny_scorer, image))
    assert scorer.score(image, CAPTION, output_all=True, max_new_tokens=16).raw_text == \
        tiny_scorer.score(image, CAPTION, output_all=True, max_new_tokens=16).raw_text


# floors: the logit SQNR measured on this fixture (27.1, 6.8, 32.8, 9.2 dB) minus a margin
@pytest.mark.parametrize("method,floor", [("bnb-int8", 22.0), ("bnb-nf4", 5.0),
                                          ("gptq-int8", 29.0), ("gptq-int4", 7.5)])
def test_quantized_bundles_run_and_stay_close(bundles, tiny_scorer, image_dir, method, floor):
    assert read_manifest(bundles[method]).backbone.method == method
    qcfg = json.loads((bundles[method] / "backbone" / "config.json").read_text())["quantization_config"]
    assert qcfg["quant_method"] == method.split("-")[0].replace("bnb", "bitsandbytes")
    scorer = Scorer.from_pretrained(bundles[method], device="cpu")
    image = image_dir / "img1.png"
    assert sqnr(prompt_logits(tiny_scorer, image), prompt_logits(scorer, image)) > floor
    v = scorer.score(image, CAPTION, max_new_tokens=8)
    assert v.error is None and isinstance(v.raw_text, str)
    again = Scorer.from_pretrained(bundles[method], device="cpu")
    assert torch.equal(prompt_logits(again, image), prompt_logits(scorer, image))


def test_bits_per_weight_order(bundles):
    bpw = {m: read_manifest(p).backbone.bits_per_weight for m, p in bundles.items()}
    assert bpw["bnb-nf4"] < bpw["bnb-int8"] < bpw["bf16"] <= 16.5
    assert bpw["gptq-int4"] < bpw["gptq-int8"] < bpw["bf16"]


def test_altered_or_missing_files_are_refused(bundles, tmp_path):
    bad = altered_copy(bundles["bf16"], tmp_path / "bad", "vision/model.safetensors")
    weights = bad / "vision" / "model.safetensors"
    with pytest.raises(InputError, match="vision/model.safetensors was altered"):
        Scorer.from_pretrained(bad, device="cpu")
    weights.unlink()
    with pytest.raises(InputError, match="vision/model.safetensors is missing"):
        Scorer.from_pretrained(bad, device="cpu")
    (bad / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not an aitqe-edge-bundle"):
        Scorer.from_pretrained(bad, device="cpu")


def test_existing_output_needs_force(bundles, tiny_ckpt, capsys):
    target = bundles["bf16"]
    before = (target / "manifest.json").read_text()
    assert main(["--model", str(tiny_ckpt), "--method", "bf16", "--output", str(target)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (target / "manifest.json").read_text() == before
    assert main(["--model", str(tiny_ckpt), "--method", "fp16", "--output", str(target), "--force"]) == 0
    assert read_manifest(target).backbone.method == "fp16"
    assert not list(target.parent.glob(".bf16.*"))  # no temp folders left behind


def test_calibration_built_with_another_model_is_refused(tiny_ckpt, tmp_path, capsys):
    from calibration.__main__ import main as calibration_main

    golden = Path(__file__).parent / "data" / "faithfulness" / "checkpoint"
    assert calibration_main(["--model", str(golden), "--output", str(tmp_path / "c.safetensors"), "--samples", "2"]) == 0
    assert main(["--model", str(tiny_ckpt), "--method", "gptq-int4", "--group-size", "32", "--calibration",
                 str(tmp_path / "c.safetensors"), "--output", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --calibration") and "built with another model" in err
    assert not (tmp_path / "b").exists()
