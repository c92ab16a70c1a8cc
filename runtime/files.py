"""Open only regular files: a FIFO, a device (/dev/zero), a socket or a pseudo-file (/proc/...)
given where a file is expected must be refused at once, not hang or stream forever.

Hand-written because no library does this check: the path is opened with O_NONBLOCK (opening a
FIFO otherwise blocks until a writer appears), then fstat on the open descriptor decides, so the
checked file is the one read (no race between a check and the open).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import BinaryIO

from runtime.errors import InputError

KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def show(path: str | os.PathLike) -> str:
    """A path as it can be printed on one line."""
    p = os.fspath(path)
    return p if p.isprintable() else repr(p)


def kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def _check_mode(mode: int, what: str) -> None:
    if not stat.S_ISREG(mode):
        raise InputError(f"{what}: is {kind(mode)}, not a regular file; pass a regular file")


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))


def open_regular(path: str | os.PathLike, what: str) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file (symlinks followed), else InputError.

    `what` starts the error message (e.g. "image a.jpg"). A regular file whose size is 0 but that
    still yields data (a /proc or sysfs pseudo-file) is refused too: its size cannot be trusted.
    """
    try:
        f = open(path, "rb", opener=_open_nonblocking)
    except FileNotFoundError:
        raise InputError(f"{what}: file does not exist; check the path") from None
    except PermissionError:
        raise InputError(f"{what}: permission denied; make the file readable") from None
    except IsADirectoryError:
        raise InputError(f"{what}: is a directory, not a regular file; pass a file") from None
    except (OSError, ValueError) as e:  # ValueError: NUL byte in the path
        raise InputError(f"{what}: cannot read the file ({' '.join(str(e).split())}); check the path") from None
    try:
        st = os.fstat(f.fileno())
        _check_mode(st.st_mode, what)
        os.set_blocking(f.fileno(), True)
    except BaseException:
        f.close()
        raise
    if st.st_size == 0 and f.read(1):
        f.close()
        raise InputError(f"{what}: is a pseudo-file whose size is unknown (e.g. under /proc), not a regular "
                         "file; pass a regular file")
    f.seek(0)
    return f


def check_regular(path: str | os.PathLike, what: str) -> None:
    """Refuse `path` unless it is a regular file (symlinks followed), without opening it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what}: file does not exist; check the path") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{what}: cannot read the file ({' '.join(str(e).split())}); check the path") from None
    _check_mode(st.st_mode, what)


def check_folder_files(folder: Path, what: str) -> None:
    """Refuse a folder holding, at its top level, anything that is neither a regular file nor a
    folder (a FIFO named model.safetensors would hang any loader that opens it)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise InputError(f"{what} {show(folder)}: cannot list the folder ({e.strerror}); check the path") from None
    for entry in entries:
        try:
            mode = entry.stat().st_mode
        except OSError:
            raise InputError(f"{what} {show(folder)}: {show(entry.name)} is a broken link or unreadable; "
                             "remove or restore it") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputError(f"{what} {show(folder)}: {show(entry.name)} is {kind(mode)}, not a regular file; "
                             "remove it or restore the real file")


def read_text(path: Path, what: str) -> str:
    """A regular file's text (UTF-8), or InputError."""
    with open_regular(path, what) as f:
        try:
            return f.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{what}: not valid UTF-8 (byte {e.start}); restore the file") from None


def read_json_object(path: Path, fix: str) -> dict:
    """A regular file holding one JSON object, or a one-line InputError ending with `fix` (what to do)."""
    text = read_text(path, str(path))
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InputError(f"{path}: not a readable JSON file ({' '.join(str(e).split())[:200]}); {fix}") from None
    if not isinstance(d, dict):
        raise InputError(f"{path}: holds a JSON {type(d).__name__}, not an object; {fix}")
    return d
