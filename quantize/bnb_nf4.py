"""bnb-nf4: 4-bit NormalFloat weights (QLoRA, Dettmers et al. 2023, arXiv:2305.14314), no calibration.

bitsandbytes quantizes the backbone's Linear layers as transformers loads the 16-bit folder, and
`save_pretrained` writes the standard bitsandbytes-serialized folder (`quant_method:
"bitsandbytes"`) that transformers and vLLM load. Embeddings stay 16-bit; lm_head too unless asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from runtime.checkpoint import DTYPES as COMPUTE


@dataclass(frozen=True)
class BnbNf4Config:
    double_quant: bool = True      # quantize the per-block scales too (~0.4 bit/weight saved)
    compute_dtype: str = "bf16"    # dtype of the dequantized matmul
    quantize_lm_head: bool = False

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE:
            raise ValueError(f"bnb-nf4 compute dtype {self.compute_dtype!r}: use one of {', '.join(COMPUTE)}")


def quantize(dense_dir: Path, out: Path, cfg: BnbNf4Config, calibration=None, device: str = "cpu") -> dict:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                            bnb_4bit_use_double_quant=cfg.double_quant,
                            bnb_4bit_compute_dtype=COMPUTE[cfg.compute_dtype],
                            llm_int8_skip_modules=[] if cfg.quantize_lm_head else ["lm_head"])
    model = AutoModelForCausalLM.from_pretrained(dense_dir, quantization_config=qc, device_map=device,
                                                 dtype=torch.bfloat16)
    model.save_pretrained(out)
    return asdict(cfg)
