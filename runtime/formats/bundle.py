"""Load an aitqe-edge bundle (layout: runtime.formats.manifest): every file is checked against its
checksum first, then the manifest's backbone method and vision format say how each part loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file
from transformers import Qwen2Config, SiglipVisionConfig
from transformers.utils import logging as hf_logging

from runtime.errors import InputError
from runtime.files import read_json_object
from runtime.formats.registry import Method, method
from runtime.formats.manifest import Manifest, Vision, read_manifest, verify
from runtime.model.checkpoint import load_tokenizer
from runtime.model.sizes import check_llm_shapes, check_vision_shapes, header_shapes
from runtime.model.vision import VisionEncoder


def read_config(path: Path) -> dict:
    """A folder's config.json as a dict, or a one-line InputError."""
    return read_json_object(path, "re-create the bundle with python -m quantize")


def check_backbone(folder: Path, m: Method) -> dict:
    """The backbone's config.json, its sizes checked against its weight headers before loading."""
    cfg = read_config(folder / "config.json")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InputError(f"{folder}: no safetensors weights; re-create the bundle with python -m quantize")
    check_llm_shapes(cfg, header_shapes(files), "model.", folder / "config.json",
                     projections=m.plain_shapes)
    try:
        Qwen2Config.from_dict(cfg)
    except Exception as e:  # transformers' config classes raise several kinds
        raise InputError(f"{folder / 'config.json'}: unusable backbone config ({' '.join(str(e).split())[:200]}); "
                         "re-create the bundle with python -m quantize") from None
    return cfg


def load_backbone(root: Path, manifest: Manifest, device: str, dtype: torch.dtype | None) -> torch.nn.Module:
    """The backbone as its method saved it."""
    name = manifest.backbone.method
    m = method(name)
    check_backbone(root / manifest.backbone.path, m)
    hf_logging.disable_progress_bar()  # stderr stays for messages, not per-load progress bars
    try:
        return m.load(root / manifest.backbone.path, manifest.backbone.params, device, dtype).eval()
    except ImportError as e:
        raise InputError(f"the {name} backbone needs a package that is not installed ({e.name}); "
                         "install aitqe-edge with the matching extra (see README)") from e


def vision_entry(manifest: Manifest, backend: str | None = None) -> Vision:
    """The manifest's vision entry to run: the default, or the first one in format `backend`."""
    if backend is None:
        return manifest.vision[0]
    for entry in manifest.vision:
        if entry.format == backend:
            return entry
    have = " and ".join(sorted({e.format for e in manifest.vision}))
    raise InputError(f"--vision-backend {backend}: this bundle's vision encoder is only in {have} format; "
                     f"use --vision-backend {manifest.vision[0].format}, or re-create the bundle with python -m quantize "
                     f"--vision {backend}")


def _check_image(root: Path, image: tuple[int, int] | None, size: object, tokens: object, where: Path) -> None:
    """The manifest's (image.size, image_tokens) against the vision tower's own, when both are known."""
    if image is None:
        return
    for name, mine, theirs in (("image.size", image[0], size), ("image_tokens", image[1], tokens)):
        if isinstance(theirs, int) and mine != theirs:
            raise InputError(f"{root}/manifest.json: {name} {mine} differs from the vision tower's {theirs} ({where}); "
                             "re-create the bundle with python -m quantize")


def load_vision(root: Path, entry: Vision, llm_hidden: int, device: str, dtype: torch.dtype | None,
                image: tuple[int, int] | None = None) -> Any:
    """The vision encoder (pixels -> embeddings) of one manifest entry; `image`, when given, is the
    manifest's (image.size, image_tokens), which must be the tower's own."""
    folder = root / entry.path
    if entry.format == "onnx":
        from runtime.model.vision_onnx import OnnxVisionEncoder

        enc = OnnxVisionEncoder(folder / entry.file, device, dtype)
        _check_image(root, image, enc.image_size, enc.tokens, folder / entry.file)
        return enc
    if entry.format != "torch":
        raise InputError(f"vision format {entry.format!r} is unknown to this version; upgrade aitqe-edge")
    raw = read_config(folder / "config.json")
    where = folder / "config.json"
    check_vision_shapes({**SiglipVisionConfig().to_dict(), **raw}, header_shapes([folder / "model.safetensors"]), "",
                        where, cut=True)
    _check_image(root, image, raw["image_size"], (raw["image_size"] // raw["patch_size"]) ** 2, where)
    try:
        cfg = SiglipVisionConfig.from_dict(raw)
    except Exception as e:  # transformers' config classes raise several kinds
        raise InputError(f"{where}: unusable vision config ({' '.join(str(e).split())[:200]}); "
                         "re-create the bundle with python -m quantize") from None
    with init_empty_weights(include_buffers=False):
        enc = VisionEncoder(cfg, llm_hidden)
    state = load_file(folder / "model.safetensors")
    enc.load_state_dict({k: v.to(dtype) if dtype else v for k, v in state.items()}, strict=True, assign=True)
    return enc.to(device).eval()


@dataclass
class Bundle:
    manifest: Manifest
    llm: torch.nn.Module
    vision: Any
    tokenizer: Any


def load_bundle(root: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None,
                trust_remote_code: bool = False, vision_backend: str | None = None) -> Bundle:
    """Verify and load a bundle. dtype applies to dense parts (None: as stored); vision_backend
    (torch | onnx) overrides the manifest's choice of vision encoder."""
    root = Path(root)
    manifest = read_manifest(root)
    entry = vision_entry(manifest, vision_backend)  # an unavailable backend fails before loading
    verify(root, manifest)
    llm = load_backbone(root, manifest, device, dtype)
    vision = load_vision(root, entry, llm.config.hidden_size, device, dtype,
                         (manifest.image.size, manifest.image_tokens))
    return Bundle(manifest, llm, vision, load_tokenizer(root / "tokenizer", trust_remote_code))
