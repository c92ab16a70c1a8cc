"""`python -m quantize.export` from bundles. GPTQ: only the language model quantized, in the llava-hf layout,
and transformers (through optimum and GPTQModel's CPU torch kernel) runs it as the runtime runs the bundle.
A 16-bit bundle (no last SigLIP layer: written as zeros) gives the runtime's ids; bitsandbytes is refused."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors import safe_open
from transformers import AutoProcessor, GPTQConfig, LlavaForConditionalGeneration

from bench.eval.pairs import DEMO_SEED
from calibration.split import demo_pairs
from quantize.backbone import CalibrationOptions
from quantize.bundle import build_bundle
from quantize.export import main
from quantize.llava_export import VISION_EXCLUDED
from runtime.demo import DEMO_MODEL
from runtime.formats import method
from runtime.scorer import Scorer

from tests.test_export_llava import compare_with_runtime, generate, inputs, load, text_of

LINEARS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


@pytest.fixture(scope="module")
def gptq(tmp_path_factory):
    """(a gptq-int4 bundle of the demo model, GPTQModel-quantized, and its llava-hf export)."""
    root = tmp_path_factory.mktemp("gptq")
    cfg = dataclasses.replace(method("gptq-int4").config(), group_size=32)
    build_bundle(DEMO_MODEL, "gptq-int4", cfg, root / "bundle", calibration=CalibrationOptions(calibration_samples=8))
    assert main(["--model", str(root / "bundle"), "--output", str(root / "llava")]) == 0
    return root / "bundle", root / "llava"


def test_only_the_language_model_is_quantized(gptq):
    bundle, llava = gptq
    config = json.loads((llava / "config.json").read_text())
    quant = config["quantization_config"]
    assert (quant["quant_method"], quant["bits"], quant["group_size"]) == ("gptq", 4, 32)
    assert quant["dynamic"] == {VISION_EXCLUDED: {}}
    with safe_open(str(llava / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        dtypes = {n: f.get_slice(n).get_dtype() for n in names}
    layers = json.loads((bundle / "backbone" / "config.json").read_text())["num_hidden_layers"]
    for module in (f"language_model.model.layers.{i}.{block}.{linear}"
                   for i in range(layers) for block, linears in LINEARS.items() for linear in linears):
        assert {f"{module}.{p}" for p in ("qweight", "qzeros", "scales", "g_idx")} <= names, module
        assert f"{module}.weight" not in names
    outside = [n for n in names if n.startswith(("vision_tower.", "multi_modal_projector."))]
    assert outside and all(dtypes[n] in ("BF16", "F16", "F32") and n.endswith((".weight", ".bias", ".probe"))
                           for n in outside)
    assert all(n.startswith(("language_model.", "vision_tower.vision_model.", "multi_modal_projector.")) for n in names)
    assert "quantized" in json.loads((llava / "aitqe_export.json").read_text())


def test_transformers_runs_the_gptq_export_as_the_runtime_runs_the_bundle(gptq):
    bundle, llava = gptq
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    model = LlavaForConditionalGeneration.from_pretrained(
        llava, dtype=torch.float16, device_map="cpu", quantization_config=GPTQConfig(bits=4, backend="torch")).eval()
    assert hasattr(model.model.language_model.layers[0].self_attn.q_proj, "qweight")  # GPTQModel's kernel
    assert type(model.model.multi_modal_projector.linear_1).__name__ == "Linear"
    assert type(model.model.vision_tower.encoder.layers[0].mlp.fc1).__name__ == "Linear"
    processor = AutoProcessor.from_pretrained(llava)
    scorer = Scorer.from_pretrained(bundle, device="cpu", dtype="fp32")  # GPTQ backbone in fp16, as its method runs
    pairs = demo_pairs(3, DEMO_SEED, "evaluation")
    for pair in pairs:  # both sides at batch 1
        expected = scorer.decode(scorer.encode([scorer.prepare(pair, 384)]), output_all=False, max_new_tokens=384)
        ids, text = expected.ids[0], expected.texts[0]
        ours = generate(model, processor, inputs(processor, pair.image, pair.caption), False, 384)
        assert ours == ids, pair.id
        assert Scorer.parse(text_of(processor, ours, False), False) == Scorer.parse(text, False)


def test_a_16_bit_bundle_exports_and_gives_the_runtimes_ids(tmp_path):
    build_bundle(DEMO_MODEL, "bf16", method("bf16").config(), tmp_path / "bundle")
    assert main(["--model", str(tmp_path / "bundle"), "--output", str(tmp_path / "llava")]) == 0
    scorer = Scorer.from_pretrained(tmp_path / "bundle", device="cpu", dtype="fp32")
    compare_with_runtime(scorer, *load(tmp_path / "llava"), demo_pairs(4, DEMO_SEED, "evaluation"))


def test_a_bitsandbytes_bundle_is_refused(tmp_path, capsys):
    build_bundle(DEMO_MODEL, "bnb-int8", method("bnb-int8").config(), tmp_path / "bundle")
    assert main(["--model", str(tmp_path / "bundle"), "--output", str(tmp_path / "llava")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bnb-int8" in err and err.count("\n") == 1
    assert not (tmp_path / "llava").exists()
