"""What a scoring process needs to load its own scorer (picklable, for Ray actors), and the
fingerprint of the model written beside every verdict."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from runtime.model.locate import GGUF_INFO, MANIFEST, kind_of


@dataclass(frozen=True)
class ScorerSpec:
    model: str
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False
    vision_backend: str | None = None
    engine: str = "fast"
    slots: int = 8
    compile: bool | None = None
    threads: int | None = None  # a GGUF export's llama.cpp threads
    gpu_layers: int = 0         # and its layers offloaded to the GPU

    def load(self):
        from runtime.scorer import Scorer

        return Scorer.from_pretrained(self.model, device=self.device, dtype=self.dtype,
                                      trust_remote_code=self.trust_remote_code, vision_backend=self.vision_backend,
                                      engine=self.engine, slots=self.slots, compile=self.compile,
                                      threads=self.threads, gpu_layers=self.gpu_layers)


def spec_of(args, model: Path, batch: bool = True) -> ScorerSpec:
    """The scorer `python -m runtime.score`'s arguments ask for (`--compile auto`: compile in batch mode only)."""
    return ScorerSpec(str(model), args.device, args.dtype, args.trust_remote_code, args.vision_backend, args.engine,
                      args.batch_size, {"auto": None if batch else False, "on": True, "off": False}[args.compile],
                      args.threads, args.gpu_layers)


def model_fingerprint(model: str | Path) -> str:
    """sha256 of a bundle's manifest (which holds every file's checksum), of a GGUF export's manifest
    (its source checkpoint's fingerprint and its type), or of a checkpoint's config and weights
    (`runtime.model.checkpoint.fingerprint`)."""
    root = Path(model)
    kind = kind_of(root)
    if kind in ("bundle", "gguf"):
        manifest = root / (MANIFEST if kind == "bundle" else GGUF_INFO)
        return "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()
    from runtime.model.checkpoint import fingerprint

    return fingerprint(root)


def cached_loader(spec: ScorerSpec):
    """A function that loads the scorer on first call only (a run with every shard done loads none)."""
    return lru_cache(maxsize=1)(spec.load)
