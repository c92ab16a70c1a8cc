"""Calibration sets in AITQE's own input format, for calibrated quantizers (GPTQ).

A sample is what the backbone really sees: the image's projected SigLIP embeddings [T, H] (from
the model's own processor, vision tower and projector), then the prompt's token ids, optionally
followed by the 16-bit model's own answer (so the activations of generated tokens are calibrated
too). A text-only set (no image embeddings) exists for comparison. Image embeddings are stored,
token ids too; token embeddings are looked up from the backbone being quantized.

Sources: a pairs JSONL (`id`, `image`, `caption`, as for `runtime.score`) or the built-in demo
world (`runtime.demo.world`), which works with any AITQE checkpoint since its images go through
that checkpoint's own preprocessing.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from runtime.errors import InputError
from runtime.pairs import read_pairs
from runtime.scorer import Pair, Scorer

FORMAT = "aitqe-edge-calibration/1"


@dataclass
class CalibrationSet:
    image_embeds: list[torch.Tensor | None]  # [T, H] per sample; None in a text-only set
    token_ids: list[list[int]]               # prompt ids, then the answer's if with_answers
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.token_ids)

    def sequences(self, embed: torch.nn.Embedding) -> list[torch.Tensor]:
        """Backbone inputs [L, H] per sample: image embeddings, then token embeddings."""
        out = []
        with torch.no_grad():
            for img, ids in zip(self.image_embeds, self.token_ids):
                tok = embed(torch.tensor(ids, device=embed.weight.device))
                out.append(tok if img is None else torch.cat([img.to(tok), tok]))
        return out


def demo_world_pairs(n: int, seed: int) -> list[Pair]:
    from runtime.demo.world import make_example

    return [Pair(e.image, e.caption, f"demo-{seed}-{i}") for i, e in
            ((i, make_example(seed, i)) for i in range(n))]


def file_pairs(path: str | Path, n: int, seed: int) -> list[Pair]:
    """`n` usable pairs of a pairs file, sampled with `seed` (bad lines are skipped)."""
    rows = [r for r in read_pairs(path) if r.error is None]
    if not rows:
        raise InputError(f"{path}: no usable pairs; each line needs id, image, caption")
    random.Random(seed).shuffle(rows)
    return [Pair(r.image, r.caption, r.id) for r in rows[:n]]


def build(scorer: Scorer, pairs: list[Pair], *, with_answers: bool = False, text_only: bool = False,
          max_new_tokens: int = 384, batch_size: int = 8, source: str = "", seed: int = 0,
          model_fingerprint: str = "") -> CalibrationSet:
    """Run pairs through the model's own preprocessing (and, with answers, its own generation)."""
    images, ids, skipped = [], [], []
    for start in range(0, len(pairs), batch_size):
        batch, ready = pairs[start:start + batch_size], []
        for p in batch:
            try:
                image, prompt, _ = scorer.prepare(p, max_new_tokens)
            except InputError as e:
                skipped.append(f"{p.id}: {e}")
                continue
            ready.append((p, image, prompt))
        if not ready:
            continue
        answers = [[] for _ in ready]
        if with_answers:
            verdicts = scorer.score_batch([r[0] for r in ready], output_all=True, max_new_tokens=max_new_tokens)
            answers = [scorer.tokenizer(v.raw_text or "", add_special_tokens=False,
                                        split_special_tokens=True)["input_ids"] for v in verdicts]
        embeds = [None] * len(ready) if text_only else scorer.image_embeddings([r[1] for r in ready])
        for (p, _, prompt), img, ans in zip(ready, embeds, answers):
            images.append(None if img is None else img.detach().to("cpu", torch.bfloat16))
            ids.append(prompt + ans)
    if not ids:
        raise InputError("no usable calibration pairs (all images or captions were rejected)")
    prov = {"format": FORMAT, "source": source, "count": len(ids), "seed": seed,
            "model_fingerprint": model_fingerprint, "with_answers": with_answers,
            "text_only": text_only, "skipped": skipped[:20], "skipped_count": len(skipped)}
    return CalibrationSet(images, ids, prov)


def save(cs: CalibrationSet, path: str | Path) -> Path:
    """One safetensors file: image embeddings and ids as tensors, provenance in the metadata."""
    path = Path(path)
    tensors = {}
    for i, (img, ids) in enumerate(zip(cs.image_embeds, cs.token_ids)):
        tensors[f"ids.{i}"] = torch.tensor(ids, dtype=torch.int64)
        if img is not None:
            tensors[f"image.{i}"] = img.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"provenance": json.dumps(cs.provenance)})
    tmp.replace(path)
    return path


def load(path: str | Path) -> CalibrationSet:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("provenance", "{}"))
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as e:
        raise InputError(f"{path}: not a readable calibration file ({e}); build one with python -m calibration") from e
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: not an aitqe-edge calibration file; build one with python -m calibration")
    n = meta["count"]
    return CalibrationSet([tensors.get(f"image.{i}") for i in range(n)],
                          [tensors[f"ids.{i}"].tolist() for i in range(n)], meta)
