"""A backbone method added in one file, this one, with no other file edited: registered, its config's
field is a flag of `python -m quantize`, and the demo model quantized with it makes a bundle that
scores pairs through `Scorer.from_pretrained`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from calibration.split import demo_pairs
from quantize.__main__ import main
from runtime.demo import DEMO_MODEL
from runtime.formats import METHODS, Method, method, option, register
from runtime.formats.manifest import read_manifest
from runtime.scorer import Scorer


@dataclass(frozen=True)
class RoundConfig:
    bits: int = option(8, "bits of the per-row symmetric grid each decoder weight is rounded to",
                       flag="--toy-bits")

    def __post_init__(self):
        if not 2 <= self.bits <= 8:
            raise ValueError(f"toy-round bits {self.bits}: use 2 to 8")


def quantize(dense_dir: Path, out: Path, cfg: RoundConfig, calibration=None, device: str = "cpu") -> dict:
    """Round each decoder Linear weight to a per-row grid of 2**bits levels, stored in bf16."""
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(dense_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
                w = module.weight.float()
                scale = (w.abs().amax(dim=1, keepdim=True) / (2 ** (cfg.bits - 1) - 1)).clamp_min(1e-12)
                module.weight.copy_((w / scale).round() * scale)
    model.save_pretrained(out)
    return dataclasses.asdict(cfg)


def load(folder: Path, params: dict, device: str, dtype: torch.dtype | None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.bfloat16, device_map=device)


@pytest.fixture(scope="module")
def toy():
    m = register(Method("toy-round", RoundConfig, quantize, load, compiles=True, plain_shapes=True))
    yield m
    METHODS.pop(m.name)


def test_toy_config_field_is_a_flag(toy, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--toy-bits" in out and "toy-round" in out
    assert main(["--model", "x", "--method", "bf16", "--toy-bits", "4", "--output", "y"]) == 1
    assert capsys.readouterr().err.strip() == "error: --toy-bits is supported by the toy-round methods only, not bf16"
    assert method("toy-round") is toy and toy.compiles


def test_toy_method_quantizes_and_scores(toy, tmp_path):
    bundle = tmp_path / "toy"
    assert main(["--model", str(DEMO_MODEL), "--method", "toy-round", "--toy-bits", "6", "--output", str(bundle)]) == 0
    backbone = read_manifest(bundle).backbone
    assert backbone.method == "toy-round" and backbone.params == {"bits": 6}
    pairs = demo_pairs(4, 1000, "evaluation")
    verdicts = Scorer.from_pretrained(bundle, device="cpu").score_many(pairs, batch_size=4, output_all=True, quiet=True)
    assert all(v.error is None and v.overall_score is not None for v in verdicts)
