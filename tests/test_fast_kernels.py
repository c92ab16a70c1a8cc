"""GPU-speed methods, what a CPU can check of them: GPTQ bundles' settings against GPTQModel's own
Marlin validation, and the fp8 method (bundle, manifest, refusal off float8 cards, and the float8
conversion's numerics through torchao's own path on CPU). Speed itself is measured on a GPU only
(bench/device_check.sh)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from bench.synthetic.checkpoints import QWEN2_7B
from quantize.__main__ import main as quantize_main
from runtime.demo import DEMO_MODEL
from runtime.errors import InputError
from runtime.formats import METHODS, fp8, gptq
from runtime.formats.manifest import read_manifest
from runtime.model.config import load_config
from runtime.scorer import Scorer

GOLDEN_CKPT = Path(__file__).parent / "data" / "faithfulness" / "checkpoint"
FULL = dict(hidden_size=QWEN2_7B["hidden"], intermediate_size=QWEN2_7B["intermediate"],
            num_attention_heads=QWEN2_7B["heads"], num_key_value_heads=QWEN2_7B["kv_heads"])

with contextlib.redirect_stdout(io.StringIO()):  # GPTQModel prints a banner on import
    from gptqmodel.nn_modules.qlinear.marlin import MarlinLinear


def model_linears(config: dict) -> list[tuple[int, int]]:
    """(in, out) of every decoder Linear of a Qwen2 of this config, read off the module itself."""
    cfg = Qwen2Config(vocab_size=64, num_hidden_layers=1, **config)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    return [(m.in_features, m.out_features) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.startswith("model.layers.")]


def marlin_accepts(quant: dict, shapes) -> bool:
    """GPTQModel's own Marlin validation, layer by layer."""
    return all(MarlinLinear._validate(bits=quant["bits"], group_size=quant["group_size"], desc_act=quant["desc_act"],
                                      sym=quant["sym"], in_features=i, out_features=o, pack_dtype=torch.int32,
                                      dtype=torch.float16)[0] for i, o in shapes)


def default_quant(name: str) -> dict:
    """The quantization_config GPTQModel writes for the method's default settings."""
    c = METHODS[name].config()
    return {"bits": c.bits, "group_size": c.group_size, "desc_act": c.act_order, "sym": c.sym}


@pytest.mark.parametrize("name", ["gptq-int4", "gptq-int8"])
def test_default_gptq_settings_are_ones_marlin_accepts(name):
    llm = load_config(DEMO_MODEL).llm
    demo = {k: getattr(llm, k) for k in FULL}
    quant = default_quant(name)
    for config in (FULL, demo):
        assert marlin_accepts(quant, model_linears(config))
        assert gptq.marlin_refusal(quant, config) is None
        assert gptq.marlin_refusal(quant, config, capability=(9, 0)) is None


@pytest.mark.parametrize("change,words", [({"sym": False}, "symmetric"), ({"group_size": 256}, "group_size"),
                                          ({"bits": 3}, "bits")])
def test_settings_marlin_refuses_are_named(change, words):
    quant = {**default_quant("gptq-int4"), **change}
    assert not marlin_accepts(quant, model_linears(FULL))  # the library agrees they are refused
    why = gptq.marlin_refusal(quant, FULL)
    assert why is not None and words in why and "\n" not in why


def test_marlin_needs_a_turing_or_newer_card():
    why = gptq.marlin_refusal(default_quant("gptq-int4"), FULL, capability=(7, 0))
    assert why is not None and "7.5" in why and "7.0" in why


@pytest.fixture(scope="module")
def fp8_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp8") / "golden-fp8"
    assert quantize_main(["--model", str(GOLDEN_CKPT), "--method", "fp8", "--output", str(out)]) == 0
    return out


def test_fp8_bundle_stores_bf16_and_records_the_method(fp8_bundle):
    m = read_manifest(fp8_bundle)
    assert m.backbone.method == "fp8"
    assert m.backbone.params["granularity"] == "row" and m.backbone.params["stored"] == "bf16"
    with safe_open(str(fp8_bundle / "backbone" / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    # bits once loaded, by hand from the config: decoder Linear weights 8 bits + a 32-bit scale per output row
    c = load_config(GOLDEN_CKPT).llm
    head = c.hidden_size // c.num_attention_heads
    q, kv, h, i = c.num_attention_heads * head, c.num_key_value_heads * head, c.hidden_size, c.intermediate_size
    linear = c.num_hidden_layers * (h * q + 2 * h * kv + q * h + 3 * h * i)
    rows = c.num_hidden_layers * (q + 2 * kv + h + 2 * i + h)
    total = m.backbone.weights
    assert math.isclose(m.backbone.bits_per_weight, (16 * total - 8 * linear + 32 * rows) / total, abs_tol=1e-3)
    assert m.backbone.bits_per_weight < 16


def test_fp8_refuses_cpu_in_one_line(fp8_bundle):
    with pytest.raises(InputError) as e:
        Scorer.from_pretrained(fp8_bundle, device="cpu")
    assert "compute capability >= 8.9" in str(e.value) and "cpu" in str(e.value) and "\n" not in str(e.value)


def test_fp8_conversion_numerics_on_cpu(fp8_bundle, monkeypatch):
    """torchao's float8 path (per-row weight, per-token activation, torch._scaled_mm) runs on CPU
    once its hardware gate is lifted: the conversion keeps the golden backbone's logits close. Floor:
    15.1 dB measured (bf16 alone: 34.8 dB; these random weights are peaked, std 0.2) minus a margin."""
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    folder = fp8_bundle / "backbone"
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model = fp8.convert(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval(), fp8.Fp8Config())
    converted = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                 and type(m.weight).__name__ == "Float8Tensor"}
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert converted == linears - {"lm_head"}
    ids = torch.randint(0, ref.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = ref(ids).logits.double(), model(ids).logits.double()
    sqnr = 20 * math.log10(a.norm() / (a - b).norm())
    print(f"fp8 logit SQNR on the golden checkpoint: {sqnr:.1f} dB")
    assert sqnr > 12.0


@pytest.mark.parametrize("name", [m for m in METHODS if m != "fp8"])  # fp8: the fixture above, refused on CPU
def test_every_method_builds_and_runs_on_the_golden_checkpoint(name, tmp_path):
    out = tmp_path / name
    extra = ["--group-size", "32", "--calibration-samples", "8"] if name.startswith("gptq") else []
    assert quantize_main(["--model", str(GOLDEN_CKPT), "--method", name, "--output", str(out), *extra]) == 0
    assert read_manifest(out).backbone.method == name
    if name.startswith("gptq"):  # the settings GPTQModel wrote are ones its Marlin kernel accepts
        cfg = json.loads((out / "backbone" / "config.json").read_text())
        assert gptq.marlin_refusal(cfg["quantization_config"], cfg) is None
        assert marlin_accepts(cfg["quantization_config"], model_linears({k: cfg[k] for k in FULL}))
    image = GOLDEN_CKPT.parent / "images" / "a_640x480.png"
    v = Scorer.from_pretrained(out, device="cpu").score(image, "a red square", output_all=True, max_new_tokens=8)
    assert v.error is None and v.timings["new_tokens"] >= 1


def test_fp8_padding_rows_stay_finite(monkeypatch):
    """An all-zero input row (right padding in bench's teacher-forced pass) stays zero, not NaN."""
    import torchao.quantization.quant_api as quant_api

    monkeypatch.setattr(quant_api, "_check_hardware_support", lambda granularity: None)
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False)).to(torch.bfloat16)
    fp8.convert(layer, fp8.Fp8Config())
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    x[1] = 0
    y = layer(x)
    assert torch.isfinite(y).all() and not y[1].any()
