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
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from runtime.errors import InputError
from runtime.files import kind, open_regular, read_text, show
from runtime.image import ImageSpec
from runtime.model.config import Eos
from runtime.model.locate import MANIFEST

FORMAT = "aitqe-edge-bundle"
FORMAT_VERSION = 3  # 2: end of generation as the original resolves it; 3: typed, with the calibration record
RECREATE = "re-create the bundle with python -m quantize"
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_IMAGE_TOKENS = 1 << 16


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

    def torch_vision(self, where: str, needs: str) -> Vision:
        """The bundle's PyTorch vision tower; else an InputError: `needs` (who) cannot use an ONNX one."""
        entry = next((v for v in self.vision if v.format == "torch"), None)
        if entry is None:
            raise InputError(f"{where}: the bundle has only an ONNX vision tower, {needs} the PyTorch one; "
                             "re-create it with python -m quantize --vision onnx,torch")
        return entry

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
                   versions=d.get("versions", {}), files=d["files"]).checked()

    def checked(self) -> Manifest:
        """This manifest if its fields have usable types and values, else ValueError naming the field."""
        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not isinstance(self.files, dict) or not self.files:
            raise ValueError("files must map each file of the bundle to its sha256")
        for rel, digest in self.files.items():
            relative_path(rel, "files")
            if not isinstance(digest, str) or not SHA256.fullmatch(digest):
                raise ValueError(f"files[{rel!r}] is not a sha256 hex digest")
        if not isinstance(self.backbone.method, str) or not isinstance(self.backbone.params, dict):
            raise ValueError("backbone.method must be a string and backbone.params an object")
        relative_path(self.backbone.path, "backbone.path")
        if not self.vision:
            raise ValueError("vision lists no vision encoder")
        for v in self.vision:
            relative_path(v.path, "vision.path")
            if v.format == "onnx":
                relative_path(v.file, "vision.file")
        if not is_int(self.image_tokens) or not 1 <= self.image_tokens <= MAX_IMAGE_TOKENS:
            raise ValueError(f"image_tokens {self.image_tokens!r} is out of range (1..{MAX_IMAGE_TOKENS})")
        if not all(is_int(i) and i >= 0 for i in (*self.eos.ids, self.pad_token_id)):
            raise ValueError("eos.ids and pad_token_id must be token ids (integers >= 0)")
        return self


def relative_path(rel: object, field_name: str) -> PurePosixPath:
    """A manifest path: relative, '/'-separated, without '..', or ValueError naming the field."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        raise ValueError(f"{field_name}: {rel!r} is not a relative path inside the bundle")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith("~"):
        raise ValueError(f"{field_name}: {rel!r} points outside the bundle (absolute or '..')")
    return p


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path, str(path)) as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: str | Path) -> Manifest:
    """The bundle's manifest, or a one-line InputError (unreadable, other format or version, broken)."""
    root = Path(root)
    try:
        d = json.loads(read_text(root / MANIFEST, f"{root}/{MANIFEST}"))
    except (ValueError, RecursionError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{root}/manifest.json: unreadable ({' '.join(str(e).split())[:200]}); {RECREATE}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputError(f"{root}: not an {FORMAT} bundle (manifest.json); {RECREATE}")
    if d.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{root}: an {FORMAT} v{d.get('format_version')} bundle; this version reads "
                         f"v{FORMAT_VERSION}: {RECREATE}")
    try:
        return Manifest.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        reason = f"missing key {e}" if isinstance(e, KeyError) else " ".join(str(e).split())[:300]
        raise InputError(f"{root}/manifest.json: malformed ({reason}); {RECREATE}") from None


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Checksum every file under `root` into the manifest and write root/manifest.json."""
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = dataclasses.replace(manifest, files=files)
    (root / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2))
    return manifest


def required_files(manifest: Manifest) -> list[str]:
    """Files every bundle of this format holds; a manifest that does not list them is refused."""
    need = [f"{manifest.backbone.path}/config.json", "tokenizer/tokenizer_config.json"]
    for v in manifest.vision:
        need += ([f"{v.path}/{v.file}"] if v.format == "onnx"
                 else [f"{v.path}/config.json", f"{v.path}/model.safetensors"])
    return need


def link_targets(root: Path) -> tuple[Path, ...]:
    """Where the links of a bundle may lead: inside it; and for a snapshot in the Hugging Face cache
    (`models--ORG--NAME/snapshots/COMMIT`, runtime.model.hub) into its repo's `blobs`, which holds the files."""
    top = root.resolve()
    blobs = top.parent.parent / "blobs"
    return (top, blobs) if top.parent.name == "snapshots" and blobs.is_dir() else (top,)


def bundle_files(root: Path) -> dict[str, Path]:
    """Every file under root (relative posix path -> path), refusing anything but regular files
    and folders, and links that lead elsewhere than `link_targets`. Links are not followed into folders."""
    allowed = link_targets(root)
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not any(target.is_relative_to(t) for t in allowed):
                    raise InputError(f"bundle {show(root)}: {show(rel)} is a link to {show(target)}, outside the "
                                     f"bundle; {RECREATE}")
            mode = path.stat().st_mode if path.exists() else 0
            if stat.S_ISDIR(mode):
                if path.is_symlink():
                    raise InputError(f"bundle {show(root)}: {show(rel)} is a link to a folder; {RECREATE}")
                continue
            if not stat.S_ISREG(mode):
                what = kind(mode) if mode else "a broken link"
                raise InputError(f"bundle {show(root)}: {show(rel)} is {what}, not a regular file; {RECREATE}")
            found[rel] = path
    return found


def verify(root: Path, manifest: Manifest) -> None:
    """Refuse a bundle with a missing, altered, unlisted or non-regular file, a path outside the
    bundle, or a manifest that leaves out a file the format needs."""
    present = bundle_files(root)
    present.pop(MANIFEST, None)
    need = [rel for rel in required_files(manifest) if rel not in manifest.files]
    if need:
        raise InputError(f"bundle {show(root)}: the manifest does not list {show(need[0])}, which every bundle "
                         f"needs; {RECREATE}")
    unlisted = sorted(set(present) - set(manifest.files))
    if unlisted:
        raise InputError(f"bundle {show(root)}: file {show(unlisted[0])} is not in the manifest (a bundle holds "
                         f"only the files it lists); remove it or {RECREATE}")
    for rel, expected in manifest.files.items():
        if rel not in present:
            raise InputError(f"bundle {show(root)}: file {show(rel)} is missing; {RECREATE}")
        if sha256_file(present[rel]) != expected:
            raise InputError(f"bundle {show(root)}: file {show(rel)} was altered (checksum mismatch); {RECREATE}")
