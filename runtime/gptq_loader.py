"""Load a GPTQ-format backbone folder with GPTQModel's kernels (CPU: its torch kernel; CUDA: the
fastest kernel it finds). GPTQModel's CPU kernels only compute in fp16/bf16, so the backbone runs
in fp16 there; transformers' own GPTQ loading would need optimum on top of the same library.
GPTQModel logs to stdout; that is sent to stderr so stdout stays the scorer's JSON.

On CPU the torch kernel's dequantization is left eager: GPTQModel wraps it in torch.compile, which
costs ~15 s on the first batch of even the demo model and was no faster afterwards (the ATen int4
kernel, GPTQ_TORCH_ATEN, was slower still: 15 s per batch of 16 demo pairs against 0.6 s eager)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch


def quiet_stdout():
    return contextlib.redirect_stdout(sys.stderr)


def load_gptq(folder: Path, device: str) -> torch.nn.Module:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(2, os.cpu_count() or 1)))
    with quiet_stdout():
        from gptqmodel import BACKEND, GPTQModel

        backend = BACKEND.AUTO if device.startswith("cuda") else BACKEND.TORCH
        wrapper = GPTQModel.load(str(folder), device=device, backend=backend, dtype=torch.float16)
    if not device.startswith("cuda"):
        for module in wrapper.model.modules():
            if "dequantize_weight" in vars(module):  # the instance's compiled wrapper -> the class's method
                del module.dequantize_weight
    return wrapper.model
