"""The bundle format, defined once: the typed manifest, its one reader (with the version check) and
its one writer. Every package reads and writes bundles through this module.

    bundle/manifest.json    format + version, source checkpoint fingerprint, backbone method and
                            parameters, calibration record, vision format(s), image spec, token ids,
                            library versions, sha256 per file
    bundle/backbone/        a standard transformers Qwen2ForCausalLM folder (maybe quantized)
    bundle/vision/          the vision encoder (SigLIP cut at hidden_states[-2] + projector)
    bundle/tokenizer/       the checkpoint's tokenizer
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import InputError
from runtime.image import ImageSpec
from runtime.model.config import Eos

FORMAT = "aitqe-edge-bundle"
FORMAT_VERSION = 3  # 2: end of generation as the original resolves it; 3: typed, with the calibration record
RECREATE = "re-create the bundle with python -m quantize"


@dataclass(frozen=True)
class Source:
    path: str
    fingerprint: str  # runtime.model.checkpoint.fingerprint of the source checkpoint


@dataclass(frozen=True)
class Backbone:
    method: str                 # a name in runtime.formats.METHODS
    params: dict                # the method's config, as saved
    path: str = "backbone"
    bits_per_weight: float = 16.0
    weights: int = 0            # parameters of the 16-bit backbone


@dataclass(frozen=True)
class Vision:
    format: str                 # "torch" | "onnx"
    dtype: str
    path: str = "vision"
    file: str | None = None     # the ONNX graph inside `path`
    details: dict = field(default_factory=dict)  # export checks (opset, parity, ...), for people


@dataclass(frozen=True)
class Calibration:
    """What a calibrated method saw: bench refuses to evaluate a bundle on these pairs."""

    source: str
    count: int
    pair_ids: tuple[str, ...]
    seed: int = 0
    text_only: bool = False
    with_answers: bool = False
    model_fingerprint: str = ""
    split: str = ""             # the rule that chose the pairs (calibration.split.RULE)


@dataclass(frozen=True)
class Manifest:
    source: Source
    backbone: Backbone
    vision: tuple[Vision, ...]  # the first runs by default; the others are kept for --vision-backend
    image: ImageSpec
    image_tokens: int
    eos: Eos
    pad_token_id: int
    calibration: Calibration | None = None
    note: str | None = None
    quantize_seconds: float | None = None
    versions: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # relative path -> sha256

    def to_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        cal = d.get("calibration")
        return cls(source=Source(**d["source"]), backbone=Backbone(**d["backbone"]),
                   vision=tuple(Vision(**v) for v in d["vision"]),
                   image=ImageSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["image"].items()}),
                   image_tokens=d["image_tokens"], eos=Eos(tuple(d["eos"]["ids"]), d["eos"]["source"]),
                   pad_token_id=d["pad_token_id"],
                   calibration=None if cal is None else Calibration(**{**cal, "pair_ids": tuple(cal["pair_ids"])}),
                   note=d.get("note"), quantize_seconds=d.get("quantize_seconds"),
                   versions=d.get("versions", {}), files=d["files"])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def is_bundle(root: str | Path) -> bool:
    return (Path(root) / "manifest.json").is_file()


def read_manifest(root: str | Path) -> Manifest:
    """The bundle's manifest, or a one-line InputError (unreadable, other format or version, broken)."""
    root = Path(root)
    try:
        d = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{root}/manifest.json: unreadable ({e}); {RECREATE}") from e
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputError(f"{root}: not an {FORMAT} bundle (manifest.json); {RECREATE}")
    if d.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{root}: an {FORMAT} v{d.get('format_version')} bundle; this version reads "
                         f"v{FORMAT_VERSION}: {RECREATE}")
    try:
        return Manifest.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"{root}/manifest.json: malformed ({type(e).__name__}: {e}); {RECREATE}") from e


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Checksum every file under `root` into the manifest and write root/manifest.json."""
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = dataclasses.replace(manifest, files=files)
    (root / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    return manifest


def verify(root: Path, manifest: Manifest) -> None:
    """Refuse a bundle with a missing or altered file."""
    for rel, expected in manifest.files.items():
        path = root / rel
        if not path.is_file():
            raise InputError(f"bundle {root}: file {rel} is missing; {RECREATE}")
        if sha256_file(path) != expected:
            raise InputError(f"bundle {root}: file {rel} was altered (checksum mismatch); {RECREATE}")
