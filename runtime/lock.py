"""An exclusive lock on an output for the life of a run, so two runs never write one output.

Every batch run takes it, whatever its format: on the verdicts JSONL (`OUT.jsonl.lock`), or on the
output folder of a shard run (`DIR.lock`, beside the folder; `DIR.I-of-N.lock` for the share of
a `--shard-index I --num-shards N` process, so the N processes of one split run side by side).

`fcntl.flock` on a sidecar `OUTPUT.lock` file: the kernel releases it when the holder exits,
however it exits (kill -9 included), so a stale lock never blocks a rerun. The holder writes its
pid, host and start time into the lock file, and a refused run names them. The holder removes the
file when its run ends (normally, on an error, on Ctrl-C), while it still holds the lock; a run
that locked a file which is no longer at the path (opened just before the holder removed it) drops
it and locks the path anew, so two runs never hold two different files of one path. After a
kill -9 the file stays, unlocked, and the next run takes it. Hand-written rather than
the `filelock` package because filelock truncates the lock file before it tries the lock, which
would erase the holder's name that the refusal shows. POSIX only (fcntl); flock is not reliable on
some network file systems. The lock file is opened without following a symbolic link, and must be a
regular file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import InputError
from runtime.files import show


def lock_path(output: Path, share: str | None = None) -> Path:
    named = output if output.name else Path(os.path.abspath(output))  # `--output .`
    return named.with_name(f"{named.name}.{share}.lock" if share else f"{named.name}.lock")


@contextlib.contextmanager
def output_lock(output: str | os.PathLike, share: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on `output` (via OUTPUT.lock, or OUTPUT.SHARE.lock) for the `with` block,
    or raise InputError naming the run that holds it."""
    output = Path(output)
    path = lock_path(output, share)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(output, path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(), 0)
        yield path
    finally:
        if _is_at(path, fd):  # never another run's file (one put there after ours was removed by hand)
            with contextlib.suppress(OSError):
                path.unlink()
        os.close(fd)  # releases the lock, after the file is gone from the path


def _is_at(path: Path, fd: int) -> bool:
    """Whether `path` is still the file open as `fd`."""
    try:
        st, mine = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _lock(output: Path, path: Path) -> int:
    """A descriptor of `path` holding its exclusive lock, or InputError."""
    while True:
        fd = _open(output, path)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputError(f"--output {show(output)}: the lock file {show(path)} is not a regular file; "
                                 "remove it and rerun")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
                raise InputError(f"--output {show(output)}: another run is writing it ({holder}; lock file "
                                 f"{show(path)}); wait for it to finish, or pass another --output") from None
        except BaseException:
            os.close(fd)
            raise
        if _is_at(path, fd):
            return fd
        os.close(fd)  # its holder removed it as we opened it: lock the path anew


def _open(output: Path, path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"--output {show(output)}: the lock file {show(path)} is a symbolic link, which is not "
                             "followed; remove it and rerun") from None
        raise InputError(f"--output {show(output)}: cannot create the lock file {show(path)} ({e.strerror}); "
                         "pass an --output in a writable folder") from None
