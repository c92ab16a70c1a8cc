"""gptq-int4 / gptq-int8: GPTQ (Frantar et al. 2022, arXiv:2210.17323) on AITQE's own inputs.

Library: GPTQModel 7.7 (the maintained successor of auto-gptq, which optimum and transformers'
GPTQ loading now require). Tried and rejected: auto-gptq 0.7.1 (unmaintained, does not build on
current torch/transformers); GPTQModel 7.0 (fails to import with transformers 5.24); torchao 0.18
`prototype.gptq` (4-bit needs the `mslk` package, an empty placeholder on PyPI; 8-bit is CUDA-only;
it writes torchao tensors, not the GPTQ format). GPTQModel writes the standard GPTQ format
(`quant_method: "gptq"`, qweight/qzeros/scales/g_idx) that transformers and vLLM load.

Multimodal calibration: GPTQModel calibrates on token ids only, so each calibration sequence
(image embeddings + prompt [+ answer] token embeddings, from `calibration/`) gets a placeholder
id, and a forward hook on the embedding layer swaps the placeholder rows for the real sequence.
GPTQ's Hessians therefore see exactly what the backbone sees at run time.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from runtime.gptq_loader import quiet_stdout

GROUP_SIZES = (-1, 32, 64, 128, 256)


@dataclass(frozen=True)
class GptqConfig:
    bits: int = 4
    group_size: int = 128        # weights per scale; -1: one scale per output row
    act_order: bool = False      # quantize columns in order of decreasing Hessian diagonal
    sym: bool = True             # symmetric grid (vLLM's fast Marlin kernels need it)
    damp: float = 0.01           # dampening, fraction of the mean Hessian diagonal

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"gptq bits {self.bits}: use 4 or 8")
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"gptq group size {self.group_size}: use one of {GROUP_SIZES}")
        if not 0 < self.damp < 1:
            raise ValueError(f"gptq damp {self.damp}: must be in (0, 1), e.g. 0.01")


def check_shapes(dense_dir: Path, cfg: GptqConfig) -> None:
    import json

    c = json.loads((dense_dir / "config.json").read_text())
    for name in ("hidden_size", "intermediate_size"):
        if cfg.group_size > 0 and c[name] % cfg.group_size:
            raise ValueError(f"gptq group size {cfg.group_size} does not divide the backbone's {name} "
                             f"({c[name]}); choose another --group-size")


def quantize(dense_dir: Path, out: Path, cfg: GptqConfig, calibration, device: str = "cpu") -> dict:
    """Quantize the 16-bit backbone folder into `out`; `calibration` is (rows [L, H], provenance)."""
    check_shapes(dense_dir, cfg)
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(2, os.cpu_count() or 1)))
    dense_dir, out = dense_dir.resolve(), out.resolve()
    cwd = os.getcwd()
    os.chdir(dense_dir.parent)  # GPTQModel writes its logs/ folder into the working directory
    try:
        with quiet_stdout():
            return _quantize(dense_dir, out, cfg, calibration, device)
    finally:
        os.chdir(cwd)


def _quantize(dense_dir: Path, out: Path, cfg: GptqConfig, calibration, device: str) -> dict:
    from gptqmodel import GPTQModel, QuantizeConfig

    qcfg = QuantizeConfig(bits=cfg.bits, group_size=cfg.group_size, desc_act=cfg.act_order,
                          sym=cfg.sym, damp_percent=cfg.damp)
    model = GPTQModel.load(str(dense_dir), qcfg, device=device, dtype=torch.float16)
    embed = model.model.get_input_embeddings()
    rows = [r.to(torch.float16) for r in calibration[0]]
    pad = model.tokenizer.pad_token_id if getattr(model, "tokenizer", None) is not None else None
    codes = [c for c in range(1, len(rows) + 2) if c != pad][: len(rows)]
    by_code = dict(zip(codes, rows))
    examples = [{"input_ids": torch.full((1, r.shape[0]), c), "attention_mask": torch.ones(1, r.shape[0], dtype=torch.long)}
                for c, r in by_code.items()]

    def inject(module, args, output):  # placeholder ids -> the real multimodal sequence
        ids, new = args[0], torch.zeros_like(output)
        for i in range(ids.shape[0]):
            keep = ids[i] != pad if pad is not None else torch.ones_like(ids[i], dtype=torch.bool)
            code = int(ids[i][keep][0])
            new[i, keep] = by_code[code].to(output.device, output.dtype)
        return new

    hook = embed.register_forward_hook(inject)
    try:
        model.quantize(examples, batch_size=1, calibration_data_min_length=0)
    finally:
        hook.remove()
    model.save(str(out))
    return {**asdict(cfg), "calibration": calibration[1]}
