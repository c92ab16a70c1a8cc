"""Load an aitqe-edge bundle: the runtime's path is chosen by `manifest.json`, never by file names.

    bundle/manifest.json    format, source fingerprint, backbone method + parameters, vision
                            format + dtype, image spec, token ids, library versions, sha256 per file
    bundle/backbone/        a standard transformers Qwen2ForCausalLM folder (maybe quantized)
    bundle/vision/          the vision encoder (SigLIP cut at hidden_states[-2] + projector)
    bundle/tokenizer/       the checkpoint's tokenizer

Every file is checked against its checksum before anything is loaded; a missing, extra-large or
altered file is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, SiglipVisionConfig
from transformers.utils import logging as hf_logging

from runtime.checkpoint import DTYPES, load_tokenizer
from runtime.errors import InputError
from runtime.image import ImageSpec
from runtime.model import VisionEncoder

FORMAT = "aitqe-edge-bundle"
FORMAT_VERSION = 2  # 2: end of generation resolved as the original does (`eos`)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def is_bundle(root: str | Path) -> bool:
    return (Path(root) / "manifest.json").is_file()


def read_manifest(root: Path) -> dict:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{root}/manifest.json: unreadable ({e}); re-create the bundle with python -m quantize") from e
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{root}: not an {FORMAT} v{FORMAT_VERSION} bundle; re-create it with python -m quantize")
    return manifest


def verify(root: Path, manifest: dict) -> None:
    """Refuse a bundle with a missing or altered file."""
    for rel, expected in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            raise InputError(f"bundle {root}: file {rel} is missing; re-create the bundle with python -m quantize")
        if sha256_file(path) != expected:
            raise InputError(f"bundle {root}: file {rel} was altered (checksum mismatch); "
                             "re-create the bundle with python -m quantize")


def cast_unquantized(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Give the plain (unquantized) parameters `dtype`; bitsandbytes' own parameter types are left alone.
    transformers loads a bitsandbytes folder in its saved 16-bit type whatever dtype it is asked for."""
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if type(p) is torch.nn.Parameter and p.is_floating_point():
                p.data = p.data.to(dtype)


def load_backbone(folder: Path, spec: dict, device: str, dtype: torch.dtype | None) -> torch.nn.Module:
    """The backbone as its method saved it: dense, bitsandbytes or GPTQ."""
    method = spec["method"]
    hf_logging.disable_progress_bar()  # stderr stays for messages, not per-load progress bars
    try:
        if method in ("bf16", "fp16"):
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or DTYPES[method], device_map=device)
        elif method.startswith("bnb-"):
            model = AutoModelForCausalLM.from_pretrained(folder, device_map=device)
            if dtype is not None:
                cast_unquantized(model, dtype)
        elif method.startswith("gptq-"):
            from runtime.gptq_loader import load_gptq

            model = load_gptq(folder, device)
        else:
            raise InputError(f"bundle backbone method {method!r} is unknown to this version; upgrade aitqe-edge")
    except ImportError as e:
        raise InputError(f"the {method} backbone needs a package that is not installed ({e.name}); "
                         "install aitqe-edge with the matching extra (see README)") from e
    return model.eval()


def vision_entry(spec: dict, backend: str | None = None) -> dict:
    """The manifest's vision entry to run: the default, or the first one in format `backend`."""
    if backend is None:
        return spec
    entries = [spec, *spec.get("alternatives", [])]
    for entry in entries:
        if entry["format"] == backend:
            return entry
    have = " and ".join(sorted({e["format"] for e in entries}))
    raise InputError(f"--vision-backend {backend}: this bundle's vision encoder is only in {have} format; "
                     f"use --vision-backend {spec['format']}, or re-create the bundle with python -m quantize "
                     f"--vision {backend}")


def load_vision(folder: Path, spec: dict, llm_hidden: int, device: str, dtype: torch.dtype | None,
                backend: str | None = None) -> Any:
    """The vision encoder (pixels -> embeddings) in the manifest's format, or in `backend`'s."""
    spec = vision_entry(spec, backend)
    if spec["format"] == "onnx":
        from runtime.vision_onnx import OnnxVisionEncoder

        return OnnxVisionEncoder(folder / spec["file"], device, dtype)
    if spec["format"] != "torch":
        raise InputError(f"vision format {spec['format']!r} is unknown to this version; upgrade aitqe-edge")
    cfg = SiglipVisionConfig.from_json_file(folder / "config.json")
    with init_empty_weights(include_buffers=False):
        enc = VisionEncoder(cfg, llm_hidden)
    state = load_file(folder / "model.safetensors")
    enc.load_state_dict({k: v.to(dtype) if dtype else v for k, v in state.items()}, strict=True, assign=True)
    return enc.to(device).eval()


@dataclass
class Bundle:
    manifest: dict
    llm: torch.nn.Module
    vision: Any
    tokenizer: Any
    image_spec: ImageSpec


def load_bundle(root: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None,
                trust_remote_code: bool = False, vision_backend: str | None = None) -> Bundle:
    """Verify and load a bundle. dtype applies to dense parts (None: as stored); vision_backend
    (torch | onnx) overrides the manifest's choice of vision encoder."""
    root = Path(root)
    manifest = read_manifest(root)
    vision_entry(manifest["vision"], vision_backend)  # an unavailable backend fails before loading
    verify(root, manifest)
    llm = load_backbone(root / "backbone", manifest["backbone"], device, dtype)
    vision = load_vision(root / "vision", manifest["vision"], llm.config.hidden_size, device, dtype, vision_backend)
    tokenizer = load_tokenizer(root / "tokenizer", trust_remote_code)
    return Bundle(manifest, llm, vision, tokenizer, ImageSpec(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in manifest["image"].items()}))
