"""Load a GPTQ-format backbone folder with GPTQModel's kernels (CPU: its torch kernel; CUDA: the
fastest kernel it finds). GPTQModel's CPU kernels only compute in fp16/bf16, so the backbone runs
in fp16 there; transformers' own GPTQ loading would need optimum on top of the same library.
GPTQModel logs to stdout; that is sent to stderr so stdout stays the scorer's JSON."""

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
    return wrapper.model
