"""Write a file so that it either exists whole or not at all: a temporary name in the same folder,
fsync, then rename (atomic on POSIX). A killed run leaves at most a `.tmp-*` file, never a partial
output under the final name; the next run that writes the same output removes them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path to write; renamed to `final` when the block ends without an exception."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(final: Path) -> None:
    """Delete the temporary files a killed run left for `final` (only those: other processes may be
    writing other outputs in the same folder)."""
    for p in final.parent.glob(f"{TMP_PREFIX}*-{final.name}") if final.parent.is_dir() else ():
        p.unlink(missing_ok=True)
