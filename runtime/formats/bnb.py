"""bitsandbytes backbones, no calibration; bitsandbytes quantizes the Linear layers as transformers
loads the 16-bit folder, and `save_pretrained` writes the standard bitsandbytes-serialized folder
(`quant_method: "bitsandbytes"`) that transformers and vLLM load. Embeddings stay 16-bit; lm_head
too unless asked.

- bnb-int8: LLM.int8() (Dettmers et al. 2022, arXiv:2208.07339): row-wise absmax int8 weights; at
  run time, activation columns above `threshold` (outliers) are multiplied in 16-bit.
- bnb-nf4: 4-bit NormalFloat weights (QLoRA, Dettmers et al. 2023, arXiv:2305.14314).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.defaults import DTYPE_NAMES
from runtime.formats.registry import Method, option, register

if TYPE_CHECKING:
    import torch

LM_HEAD = "quantize lm_head too"


@dataclass(frozen=True)
class BnbInt8Config:
    threshold: float = option(6.0, "outlier threshold (0 disables the 16-bit outlier path)", flag="--int8-threshold")
    quantize_lm_head: bool = option(False, LM_HEAD)

    def __post_init__(self):
        if self.threshold < 0:
            raise ValueError(f"bnb-int8 threshold {self.threshold}: must be >= 0 (0 disables outliers)")


@dataclass(frozen=True)
class BnbNf4Config:
    # quantize the per-block scales too (~0.4 bit/weight saved)
    double_quant: bool = option(True, "do not quantize the scales", flag="--no-double-quant")
    compute_dtype: str = option("bf16", "matmul dtype", choices=DTYPE_NAMES)
    quantize_lm_head: bool = option(False, LM_HEAD)

    def __post_init__(self):
        if self.compute_dtype not in DTYPE_NAMES:
            raise ValueError(f"bnb-nf4 compute dtype {self.compute_dtype!r}: use one of {', '.join(DTYPE_NAMES)}")


def _quantize(dense_dir: Path, out: Path, qc, device: str) -> None:
    from transformers import AutoModelForCausalLM
    import torch

    model = AutoModelForCausalLM.from_pretrained(dense_dir, quantization_config=qc, device_map=device,
                                                 dtype=torch.bfloat16)
    model.save_pretrained(out)


def quantize_int8(dense_dir: Path, out: Path, cfg: BnbInt8Config, calibration=None, device: str = "cpu") -> dict:
    from transformers import BitsAndBytesConfig

    _quantize(dense_dir, out, BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=cfg.threshold,
                                                 llm_int8_skip_modules=[] if cfg.quantize_lm_head else ["lm_head"]),
              device)
    return asdict(cfg)


def quantize_nf4(dense_dir: Path, out: Path, cfg: BnbNf4Config, calibration=None, device: str = "cpu") -> dict:
    from transformers import BitsAndBytesConfig
    from runtime.model.checkpoint import DTYPES

    _quantize(dense_dir, out, BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                 bnb_4bit_use_double_quant=cfg.double_quant,
                                                 bnb_4bit_compute_dtype=DTYPES[cfg.compute_dtype],
                                                 llm_int8_skip_modules=[] if cfg.quantize_lm_head else ["lm_head"]),
              device)
    return asdict(cfg)


def cast_unquantized(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Give the plain (unquantized) parameters `dtype`; bitsandbytes' own parameter types are left alone.
    transformers loads a bitsandbytes folder in its saved 16-bit type whatever dtype it is asked for."""
    import torch

    for module in model.modules():
        for p in module.parameters(recurse=False):
            if type(p) is torch.nn.Parameter and p.is_floating_point():
                p.data = p.data.to(dtype)


def load(folder: Path, params: dict, device: str, dtype: torch.dtype | None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, device_map=device)
    if dtype is not None:
        cast_unquantized(model, dtype)
    return model


# bnb-nf4: bitsandbytes 0.50 registers fake kernels for its 4-bit ops, so the fast engine compiles the
# step (tests/test_engine_compile.py: same ids as eager on CPU, one graph per bucket). bnb-int8 decodes
# eagerly: LLM.int8()'s outlier split (int8_vectorwise_quant, int8_mixed_scaled_mm) has an output shape
# that depends on the data, a graph break at every Linear (42 graphs for 2 buckets of the demo model)
register(Method("bnb-int8", BnbInt8Config, quantize_int8, load))
register(Method("bnb-nf4", BnbNf4Config, quantize_nf4, load, compiles=True))
