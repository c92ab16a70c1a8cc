"""bf16 / fp16: the backbone unquantized, so the 16-bit reference is a bundle like the others."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.formats.registry import Method, register

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DenseConfig:
    dtype: str = "bf16"     # fixed by the method's name

    def __post_init__(self):
        if self.dtype not in ("bf16", "fp16"):
            raise ValueError(f"dense dtype {self.dtype!r}: use bf16 or fp16")


@dataclass(frozen=True)
class Fp16Config(DenseConfig):
    dtype: str = "fp16"


def quantize(dense_dir: Path, out: Path, cfg: DenseConfig, calibration=None, device: str = "cpu") -> dict:
    """Copy the 16-bit backbone folder in the requested dtype."""
    from transformers import Qwen2ForCausalLM
    from runtime.model.checkpoint import DTYPES

    Qwen2ForCausalLM.from_pretrained(dense_dir, dtype=DTYPES[cfg.dtype]).save_pretrained(out)
    return {"dtype": cfg.dtype}


def load(folder: Path, params: dict, device: str, dtype: torch.dtype | None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM
    from runtime.model.checkpoint import DTYPES

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or DTYPES[params["dtype"]], device_map=device)


# plain nn.Linear layers: the fast engine compiles them
register(Method("bf16", DenseConfig, quantize, load, compiles=True, plain_shapes=True))
register(Method("fp16", Fp16Config, quantize, load, compiles=True, plain_shapes=True))
