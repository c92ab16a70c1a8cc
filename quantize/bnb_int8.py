"""bnb-int8: LLM.int8() (Dettmers et al. 2022, arXiv:2208.07339), no calibration.

Row-wise absmax int8 weights; at run time, activation columns above `threshold` (outliers) are
multiplied in 16-bit. bitsandbytes quantizes as transformers loads the 16-bit folder; the saved
folder is the standard bitsandbytes format. Embeddings stay 16-bit; lm_head too unless asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class BnbInt8Config:
    threshold: float = 6.0         # outlier threshold; 0 disables the 16-bit outlier path
    quantize_lm_head: bool = False

    def __post_init__(self):
        if self.threshold < 0:
            raise ValueError(f"bnb-int8 threshold {self.threshold}: must be >= 0 (0 disables outliers)")


def quantize(dense_dir: Path, out: Path, cfg: BnbInt8Config, calibration=None, device: str = "cpu") -> dict:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    qc = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=cfg.threshold,
                            llm_int8_skip_modules=[] if cfg.quantize_lm_head else ["lm_head"])
    model = AutoModelForCausalLM.from_pretrained(dense_dir, quantization_config=qc, device_map=device,
                                                 dtype=torch.bfloat16)
    model.save_pretrained(out)
    return asdict(cfg)
