"""GGUF exports as bench candidates: what `python -m bench` reports of one (name, method `gguf-TYPE`,
bits per language-model weight, disk bytes, image size), read from its manifest and its GGUF."""

from __future__ import annotations

from pathlib import Path

from quantize.bundle import bundle_bytes
from runtime.engine.llama_cpp import read_manifest


def describe_gguf(path: Path) -> dict:
    """A GGUF export's row: bits per weight are the language-model file's bits over its weights' count."""
    from gguf import GGUFReader

    m = read_manifest(path)
    lm = path / m["files"]["language_model"]
    weights = sum(int(t.n_elements) for t in GGUFReader(lm).tensors)
    return {"name": path.name, "path": str(path), "method": f"gguf-{m['type']}",
            "bits_per_weight": round(lm.stat().st_size * 8 / weights, 2), "disk_bytes": bundle_bytes(path),
            "image_size": m["image"]["size"], "calibration": None}
