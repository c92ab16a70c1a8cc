"""Helpers for the dataset tests: demo-world shards (runtime.demo.shards) and ways to damage them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

FAST = ["--device", "cpu", "--quiet", "--batch-size", "4"]


def run(capsys, *argv) -> tuple[int, str]:
    """`python -m runtime.score` in-process on the demo model (`--model demo` unless argv names another)
    with fast settings: exit code and stderr."""
    from runtime.score import main

    capsys.readouterr()
    try:
        rc = main(["--model", "demo", *map(str, argv), *FAST])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def rewrite_tar(path: Path, change) -> None:
    """Rewrite a tar member by member: change(name, data) -> new bytes, or None to drop the member."""
    members = []
    with tarfile.open(path) as tf:
        for info in tf.getmembers():
            members.append((info.name, tf.extractfile(info).read()))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            new = change(name, data)
            if new is not None:
                info = tarfile.TarInfo(name)
                info.size = len(new)
                tf.addfile(info, io.BytesIO(new))


def corrupt_header(path: Path, member: str) -> None:
    """Overwrite the checksum field of `member`'s header: tar readers no longer see that member."""
    raw = bytearray(path.read_bytes())
    at = raw.find(member.encode() + b"\0")
    assert at >= 0, member
    raw[at + 148:at + 156] = b"9999999\0"
    path.write_bytes(bytes(raw))


def member_offset(path: Path, member: str) -> int:
    """Byte offset of `member`'s data in the tar."""
    with tarfile.open(path) as tf:
        return tf.getmember(member).offset_data
