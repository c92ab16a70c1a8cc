"""Calibration sets in AITQE's own input format, for calibrated quantizers (GPTQ).

A sample is what the backbone really sees: the image's projected SigLIP embeddings [T, H] (from
the model's own processor, vision tower and projector), then the prompt's token ids, optionally
followed by the 16-bit model's own answer (so the activations of generated tokens are calibrated
too). A text-only set (no image embeddings) exists for comparison. Image embeddings are stored,
token ids too; token embeddings are looked up from the backbone being quantized.

Sources: a pairs JSONL (`id`, `image`, `caption`, as for `runtime.score`) or the built-in demo
world (`runtime.demo.world`), which works with any AITQE checkpoint since its images go through
that checkpoint's own preprocessing. Only calibration pairs are drawn (`calibration.split`), and the
set's provenance keeps their ids: a bundle's manifest records them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from calibration.split import RULE, demo_pairs, file_pairs
from runtime.atomic import atomic_path
from runtime.errors import InputError
from runtime.formats.manifest import Calibration
from runtime.scorer import Pair, Scorer

FORMAT = "aitqe-edge-calibration/2"  # 2: the ids of the pairs used


@dataclass
class CalibrationSet:
    image_embeds: list[torch.Tensor | None]  # [T, H] per sample; None in a text-only set
    token_ids: list[list[int]]               # prompt ids, then the answer's if with_answers
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.token_ids)

    def record(self) -> Calibration:
        """What a bundle's manifest keeps of this set."""
        p = self.provenance
        return Calibration(source=p["source"], count=p["count"], pair_ids=tuple(p["pair_ids"]), seed=p["seed"],
                           text_only=p["text_only"], with_answers=p["with_answers"],
                           model_fingerprint=p["model_fingerprint"], split=p["split"])

    def sequences(self, embed: torch.nn.Embedding) -> list[torch.Tensor]:
        """Backbone inputs [L, H] per sample: image embeddings, then token embeddings."""
        out = []
        with torch.no_grad():
            for img, ids in zip(self.image_embeds, self.token_ids):
                tok = embed(torch.tensor(ids, device=embed.weight.device))
                out.append(tok if img is None else torch.cat([img.to(tok), tok]))
        return out


def calibration_pairs(pairs_file: str | Path | None, n: int, seed: int) -> tuple[list[Pair], str]:
    """`n` calibration pairs (calibration.split) of a pairs file, sampled with `seed`, or of demo world
    `seed` without one; and a description of the source."""
    if pairs_file:
        return file_pairs(pairs_file, n, "calibration", seed), f"pairs:{Path(pairs_file).resolve()}"
    return demo_pairs(n, seed, "calibration"), f"demo-world:seed={seed}"


def build(scorer: Scorer, pairs: list[Pair], *, with_answers: bool = False, text_only: bool = False,
          max_new_tokens: int = 384, batch_size: int = 8, source: str = "", seed: int = 0,
          model_fingerprint: str = "") -> CalibrationSet:
    """Run pairs through the model's own preprocessing (and, with answers, its own generation)."""
    images, ids, used, skipped = [], [], [], []
    for start in range(0, len(pairs), batch_size):
        batch, ready = pairs[start:start + batch_size], []
        for p in batch:
            try:
                ready.append((p, scorer.prepare(p, max_new_tokens)))
            except InputError as e:
                skipped.append(f"{p.id}: {e}")
        if not ready:
            continue
        rows = scorer.encode([r for _, r in ready]) if with_answers else None
        answers = (scorer.decode(rows, output_all=True, max_new_tokens=max_new_tokens).ids if rows
                   else [[] for _ in ready])
        if text_only:
            embeds = [None] * len(ready)
        else:
            embeds = ([r[:scorer.image_tokens] for r in rows] if rows else
                      scorer.image_embeddings(torch.stack([r.pixels for _, r in ready])))
        for (p, prepared), img, ans in zip(ready, embeds, answers):
            images.append(None if img is None else img.detach().to("cpu", torch.bfloat16))
            ids.append(prepared.ids + [t for t in ans if t not in scorer.eos.ids])
            used.append(str(p.id))
    if not ids:
        raise InputError("no usable calibration pairs (all images or captions were rejected)")
    prov = {"format": FORMAT, "source": source, "count": len(ids), "seed": seed, "split": RULE, "pair_ids": used,
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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"provenance": json.dumps(cs.provenance)})
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
        raise InputError(f"{path}: not an aitqe-edge calibration file (v{FORMAT.rsplit('/', 1)[1]}); "
                         "build one with python -m calibration")
    try:
        cs = CalibrationSet([tensors.get(f"image.{i}") for i in range(meta["count"])],
                            [tensors[f"ids.{i}"].tolist() for i in range(meta["count"])], meta)
        cs.record()
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: incomplete calibration file (no {e}); build it again with python -m calibration") from e
    return cs
