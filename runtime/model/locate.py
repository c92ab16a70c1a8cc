"""What is at a path, answered in one place for every command: an aitqe-edge bundle (`manifest.json`),
a LLaVA export of `python -m quantize.export` (`aitqe_export.json`), a GGUF export for llama.cpp
(`aitqe_gguf.json`), or an AITQE checkpoint folder (`config.json`), checked in that order; or
nothing usable, said in one line.

`locate` is for inputs (what to load); `check_replaceable` is for outputs (whether a command may
write a folder there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.errors import InputError
from runtime.files import show

MANIFEST = "manifest.json"
EXPORT_INFO = "aitqe_export.json"
GGUF_INFO = "aitqe_gguf.json"
CONFIG = "config.json"
KINDS = (("bundle", MANIFEST), ("export", EXPORT_INFO), ("gguf", GGUF_INFO), ("checkpoint", CONFIG))  # in this order
PASS = "pass an AITQE checkpoint folder or a bundle"
SCORABLE = ("bundle", "checkpoint", "gguf")  # what the scoring commands' --model may name


@dataclass(frozen=True)
class Located:
    kind: str       # "bundle" | "export" | "gguf" | "checkpoint"
    root: Path


def kind_of(path: str | Path) -> str:
    """bundle | export | gguf | checkpoint for a folder holding one; else missing | file | empty | other."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if not path.is_dir():
        return "file"
    # a marker that exists but is no regular file (a FIFO) still decides: its reader says what is wrong
    found = next((kind for kind, marker in KINDS if (path / marker).exists()), None)
    if found:
        return found
    return "other" if any(path.iterdir()) else "empty"


def locate(path: str | Path, what: str = "--model", accept: tuple[str, ...] = ("bundle", "checkpoint")) -> Located:
    """The folder at `path` if it is one of the `accept` kinds, else a one-line InputError that
    starts with `what` (the option that named it)."""
    path = Path(path)
    kind = kind_of(path)
    label = f"{what} {show(path)}".strip()
    if kind in accept:
        return Located(kind, path)
    if kind == "missing":
        raise InputError(f"{label}: not a folder (nothing is there); {PASS}")
    if kind == "file":
        raise InputError(f"{label}: not a folder (a file); {PASS}")
    if kind == "export":
        raise InputError(f"{label}: a LLaVA export of python -m quantize.export (for transformers or vLLM); {PASS}")
    if kind == "gguf":
        raise InputError(f"{label}: a GGUF export for llama.cpp (python -m runtime.score runs it); {PASS}")
    raise InputError(f"{label}: not an AITQE checkpoint or bundle folder (no {CONFIG} or {MANIFEST}); {PASS}")


def check_replaceable(output: str | Path, kind: str, what: str, force: bool) -> None:
    """Refuse to write the folder `output` over anything unless `force`, and even then over anything
    but an empty folder or a folder of this `kind` (`what` names it: "a bundle")."""
    output = Path(output)
    found = kind_of(output)
    if found == "missing":
        return
    if not force:
        raise InputError(f"{output} already exists; pass --force to replace it, or choose another --output")
    if found not in (kind, "empty"):
        raise InputError(f"{output} exists and is not {what}; refusing to replace it, choose another --output")
