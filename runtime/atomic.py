"""Write a file or a folder so that it either exists whole or not at all: a temporary name beside
the final one, fsync, then rename (atomic on POSIX). Every output the project writes goes through
here. A killed run leaves at most a `.tmp-*` file or a `.NAME.tmp-*` folder, never a partial output
under the final name; the next run that writes the same file removes its temporaries."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runtime.errors import InputError

TMP_PREFIX = ".tmp-"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path to write; renamed to `final` when the block ends without an exception."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(final: Path, text: str) -> None:
    """`text` (UTF-8) as the file `final`, atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """A fresh temporary folder beside `final` to fill; when the block ends without an exception it
    takes `final`'s place (an existing `final` is moved aside, then removed: the caller decides
    whether it may be replaced), else it is removed. A symbolic link at `final` is refused: replacing
    the link would leave its target as it was and the command's output somewhere else."""
    if final.is_symlink():
        raise InputError(f"{final}: is a symbolic link, which is not followed; pass the folder itself")
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = final.parent / f".{final.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        for folder, _, files in os.walk(tmp):
            for name in [*files, "."]:
                _fsync(Path(folder) / name)
        if final.exists():
            old = final.parent / f".{final.name}.old-{tag}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
        _fsync(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(final: Path) -> None:
    """Delete the temporary files a killed run left for `final` (only those: other processes may be
    writing other outputs in the same folder)."""
    for p in final.parent.glob(f"{TMP_PREFIX}*-{final.name}") if final.parent.is_dir() else ():
        p.unlink(missing_ok=True)
