"""Build an aitqe-edge bundle (format: runtime.formats.manifest) atomically (`runtime.atomic.atomic_folder`:
a temp folder beside the output, renamed into place once every file and the manifest are written).
`build_bundle` is the one path that makes bundles: `python -m quantize` and bench's synthetic
variants both call it."""

from __future__ import annotations

import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from quantize.backbone import CalibrationOptions, calibration_for, quantize_backbone
from quantize.vision import export_vision
from runtime.atomic import atomic_folder
from runtime.errors import InputError
from runtime.formats import method
from runtime.formats.manifest import Manifest, Source, write_manifest
from runtime.model.checkpoint import fingerprint, load_checkpoint, stored_dtype
from runtime.model.config import load_config
from runtime.model.locate import check_replaceable

LIBRARIES = ("torch", "transformers", "accelerate", "safetensors", "bitsandbytes", "gptqmodel",
             "onnx", "onnxruntime", "onnxruntime-gpu", "aitqe-edge")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def bundle_bytes(root: Path, prefix: str = "") -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and
               p.relative_to(root).as_posix().startswith(prefix))


def vision_spec(name: str, method_name: str) -> tuple[str, str]:
    """(format, dtype) of a --vision choice; the torch tower keeps the backbone's 16-bit type."""
    if name == "torch":
        return "torch", "fp16" if method_name == "fp16" else "bf16"
    return "onnx", "fp16" if name == "onnx-fp16" else "fp32"


def build_bundle(model: str | Path, method_name: str, config: Any, output: str | Path, *,
                 vision: tuple[str, ...] = ("torch",), calibration: CalibrationOptions = CalibrationOptions(),
                 device: str = "cpu", force: bool = False, synthetic: bool = False) -> Manifest:
    """Quantize checkpoint `model` with `method_name` into the bundle folder `output`. `synthetic`:
    the method's random-weight variant (no calibration), for cost measurements only."""
    output = Path(output)
    hf_logging.disable_progress_bar()  # the command prints one summary line, not per-step bars
    check_replaceable(output, "bundle", "a bundle", force)
    start = time.perf_counter()
    with atomic_folder(output) as tmp:
        # a synthetic variant's source is random: no fingerprint, and no need to compute in fp32
        ck = load_checkpoint(model, dtype=stored_dtype(load_config(model)) if synthetic else torch.float32)
        source = "synthetic (random weights)" if synthetic else fingerprint(model)
        cal = (calibration_for(calibration, ck, source)
               if method(method_name).calibrated and not synthetic else None)
        if cal is not None and cal.provenance["model_fingerprint"] != source:
            raise InputError(f"--calibration {calibration.calibration}: built with another model "
                             f"({cal.provenance['model_fingerprint'][:19]}...); build it with python -m calibration "
                             f"--model {model}")
        backbone = quantize_backbone(ck, method_name, config, tmp / "backbone", calibration=cal, device=device,
                                     work=tmp / ".work", synthetic=synthetic)
        entries = tuple(export_vision(ck, tmp / "vision", *vision_spec(v, method_name)) for v in vision)
        ck.tokenizer.save_pretrained(tmp / "tokenizer")
        shutil.rmtree(tmp / ".work")
        cfg = ck.config
        manifest = write_manifest(tmp, Manifest(
            source=Source(str(Path(model).resolve()), source), backbone=backbone, vision=entries, image=cfg.image,
            image_tokens=cfg.image_tokens, eos=cfg.eos, pad_token_id=cfg.pad_token_id,
            calibration=cal.record() if cal is not None else None,
            note=cfg.note,
            quantize_seconds=round(time.perf_counter() - start, 1), versions=versions()))
    return manifest
