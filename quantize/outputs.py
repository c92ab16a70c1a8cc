"""Where an export may be written: one rule for every export of `python -m quantize.export` (the
LLaVA folder and the GGUF folder). A folder is replaced only with --force, and then only when it is
empty or holds nothing but the files its own manifest lists (an export's `aitqe_export.json` or
`aitqe_gguf.json`: `files`); a symbolic link is never followed. The export itself is then written
through `runtime.atomic.atomic_folder`, so a failed one leaves the old folder as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.errors import InputError
from runtime.model.locate import EXPORT_INFO, GGUF_INFO

MANIFESTS = (EXPORT_INFO, GGUF_INFO)


def written(out: Path) -> list[str] | None:
    """The names an export of this tool says it wrote in `out` (its manifest's `files`, a list or a
    dict of role -> name, and the manifest itself), or None."""
    for manifest in MANIFESTS:
        if not (out / manifest).is_file():
            continue
        try:
            files = json.loads((out / manifest).read_text(encoding="utf-8")).get("files")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return None
        names = list(files.values()) if isinstance(files, dict) else files
        if isinstance(names, list) and all(isinstance(f, str) for f in names):
            return sorted(set(names) | {manifest})
        return None
    return None


def check_output(out: Path, force: bool) -> None:
    """Refuse `out` unless it is missing, or (with --force) an empty folder or an export whose folder
    holds only the files its manifest lists (never a symbolic link, never anything the user put there)."""
    if out.is_symlink():
        raise InputError(f"--output {out}: is a symbolic link, which is not followed; pass the folder itself")
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"--output {out}: {out.parent} is a file, not a folder; choose another --output")
    if not out.exists():
        return
    if not force:
        raise InputError(f"--output {out}: already exists; pass --force to replace it, or choose another --output")
    if not out.is_dir():
        raise InputError(f"--output {out}: is a file, not an export; refusing to replace it, choose another --output")
    present = sorted(p.name for p in out.iterdir())
    if not present:
        return
    listed = written(out)
    if listed is None:
        raise InputError(f"--output {out}: not an export of this tool that lists its files (no files in "
                         f"{' or '.join(MANIFESTS)}); refusing to replace it, delete it yourself or choose "
                         "another --output")
    extra = [name for name in present if name not in listed or (out / name).is_symlink()]
    if extra:
        raise InputError(f"--output {out}: holds {extra[0]!r}, which the export did not write; refusing to replace "
                         "it, move that away or choose another --output")
