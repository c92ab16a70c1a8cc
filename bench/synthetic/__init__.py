"""Random-weight variants of published shapes, built on the device, for the cost columns only.

Each variant is a real bundle made by the one bundle builder (`quantize.bundle.build_bundle`) from a
random checkpoint in the released layout (`bench.synthetic.checkpoints`), with each method's own
synthetic variant (`runtime.formats.Method.make_synthetic`: the quantizer itself for bf16, fp16 and
bitsandbytes; random codes in the GPTQ format, since GPTQ on a 7B model would outlast the benchmark).
The checkpoint names no end-of-generation id, so every pair decodes exactly the shape's token budget.
Shapes: `full` is AITQE's own (Qwen2-7B + SigLIP so400m-patch14-384, 729 image tokens); `reduced`
keeps the 729-token image side with a 45 M-parameter backbone, so the same code runs on a CPU in
minutes; `tiny` is for tests. Random weights make timings and memory valid, not accuracy (LLM.int8's
outlier path, which depends on real activations, is the one cost that may differ).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.synthetic.checkpoints import SHAPES, random_checkpoint
from quantize.bundle import build_bundle
from runtime.formats import method
from runtime.formats.manifest import Manifest
from runtime.model.config import load_config

NEW_TOKENS = {"full": 64, "reduced": 32, "tiny": 6}


def synthetic_checkpoint(shape: str, folder: Path, device: str) -> Path:
    return random_checkpoint(folder, SHAPES[shape], eos=False, device=device)


def synthetic_bundle(checkpoint: Path, name: str, out: Path, device: str) -> Manifest:
    """Method `name`'s synthetic variant of a random checkpoint, as a bundle at `out`."""
    config = method(name).config()
    if "group_size" in {f.name for f in dataclasses.fields(config)}:
        llm = load_config(checkpoint).llm
        group = next(g for g in (128, 64, 32) if llm.hidden_size % g == 0 and llm.intermediate_size % g == 0)
        config = dataclasses.replace(config, group_size=group)
    return build_bundle(checkpoint, name, config, out, device=device, force=True, synthetic=True)

