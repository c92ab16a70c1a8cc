"""Does a bundle's vision encoder change AITQE's verdicts? Score held-out demo-world pairs twice.

Both runs use the bundle's own backbone (in fp32) and tokenizer; one with the bundle's vision
encoder (as its manifest says, e.g. ONNX), one with the PyTorch fp32 tower of the source checkpoint
(the manifest's source path, or `reference`). Pairs are `runtime.demo.world.make_example(seed, i)`,
scored in the default stop-at-Overall mode. Reports how often the overall scores (and the whole
generated texts) agree, and the embeddings' parity over those images.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from quantize.vision_onnx import compare_embeddings
from runtime.bundle import is_bundle, read_manifest
from runtime.checkpoint import load_checkpoint
from runtime.errors import InputError
from runtime.scorer import Scorer

MIN_AGREEMENT = {"fp32": 0.99, "fp16": 0.98}


def compare(bundle: str | Path, *, pairs: int = 500, seed: int = 1000, reference: str | Path | None = None,
            batch_size: int = 32, device: str = "cpu", quiet: bool = False, log: Callable = print) -> dict:
    from runtime.demo.evaluate import held_out_pairs

    bundle = Path(bundle)
    if not is_bundle(bundle):
        raise InputError(f"--compare {bundle}: not a bundle (no manifest.json); make one with python -m quantize")
    manifest = read_manifest(bundle)
    reference = Path(reference or manifest["source"]["path"])
    if not (reference / "config.json").is_file():
        raise InputError(f"reference checkpoint {reference} not found; pass --reference with the bundle's source checkpoint")
    scorer = Scorer.from_pretrained(bundle, device=device, dtype="fp32")
    torch_scorer = dataclasses.replace(scorer, vision=load_checkpoint(reference, device=device).vision)
    held_out = held_out_pairs(pairs, seed, scorer.image_spec.size)
    got, want, emb = [], [], []
    for i in tqdm(range(0, pairs, batch_size), desc="pairs", disable=quiet, file=sys.stderr):
        chunk = held_out[i:i + batch_size]
        got += scorer.score_batch(chunk)
        want += torch_scorer.score_batch(chunk)
        images = [p.image.convert("RGB") for p in chunk]
        emb.append((torch_scorer.image_embeddings(images).cpu(), scorer.image_embeddings(images).cpu()))
    spec = manifest["vision"]
    result = {
        "bundle": str(bundle), "vision": f"{spec['format']} {spec['dtype']}", "pairs": pairs, "seed": seed,
        "overall_agreement": sum(a.overall_score == b.overall_score for a, b in zip(got, want)) / pairs,
        "text_agreement": sum(a.raw_text == b.raw_text for a, b in zip(got, want)) / pairs,
        "errors": sum(a.error is not None or b.error is not None for a, b in zip(got, want)),
        "embeddings": compare_embeddings(torch.cat([r for r, _ in emb]), torch.cat([o for _, o in emb])),
    }
    e = result["embeddings"]
    log(f"{bundle.name}: vision {result['vision']} vs PyTorch fp32 on {pairs} held-out pairs (seed {seed}): "
        f"same overall score {result['overall_agreement']:.1%}, same text {result['text_agreement']:.1%}, "
        f"embeddings cosine min {e['cosine_min']:.8f}, max abs err {e['max_abs_err']:.3g}")
    return result
