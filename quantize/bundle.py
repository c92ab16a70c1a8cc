"""Write an aitqe-edge bundle atomically (temp folder + rename); see runtime/bundle.py for the layout."""

from __future__ import annotations

import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path

from runtime.bundle import FORMAT, FORMAT_VERSION, sha256_file
from runtime.errors import InputError

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


def staging_dir(output: Path, force: bool) -> Path:
    """A fresh temp folder beside `output`; refuses an existing output unless `force`."""
    if output.exists() and not force:
        raise InputError(f"{output} already exists; pass --force to replace it, or choose another --output")
    if output.exists() and not (output / "manifest.json").is_file() and any(output.iterdir()):
        raise InputError(f"{output} exists and is not a bundle; refusing to replace it, choose another --output")
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def finish(tmp: Path, output: Path, manifest: dict) -> dict:
    """Checksum every file, write manifest.json, and move the bundle into place."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest,
                "versions": versions(),
                "files": {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(old)
        tmp.rename(output)
        shutil.rmtree(old)
    else:
        tmp.rename(output)
    return manifest


def bundle_bytes(root: Path, prefix: str = "") -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and
               p.relative_to(root).as_posix().startswith(prefix))
