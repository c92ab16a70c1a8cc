"""The output lock's file goes away with its run (normally, on an error, on Ctrl-C), removed only by its
holder, and two runs still exclude each other, even one that opened the file just before the holder
removed it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import lock
from runtime.errors import InputError
from runtime.lock import lock_path, output_lock

ROOT = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from runtime.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_the_lock_file_goes_with_the_run(tmp_path):
    out = tmp_path / "o.jsonl"
    with output_lock(out) as path:
        assert path.exists() and f"pid {os.getpid()} " in path.read_text()
    assert not path.exists()
    with pytest.raises(RuntimeError), output_lock(out, "0-of-2") as path:
        raise RuntimeError("the run failed")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_removes_it_and_kill_9_leaves_it_unlocked(tmp_path):
    out = tmp_path / "o.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for sig, stays in ((signal.SIGINT, False), (signal.SIGKILL, True)):
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"pid {holder.pid} "):
            with output_lock(out):
                pass
        holder.send_signal(sig)
        holder.wait(timeout=30)
        assert lock_path(out).exists() == stays
    with output_lock(out):  # a killed holder's file is taken, then removed
        pass
    assert not lock_path(out).exists()


def test_a_file_opened_as_its_holder_removed_it_is_not_locked(tmp_path, monkeypatch):
    """Run B opens the lock file, run A ends (removes and releases it), B locks the removed file: B must
    lock the path anew, or a run C would lock a new file at the path while B runs."""
    out = tmp_path / "o.jsonl"
    opened = []
    real_open = lock._open

    def open_then_holder_ends(output, path):
        fd = real_open(output, path)
        if not opened:  # the first open: the holder's run ends right after it
            path.unlink()
        opened.append(os.fstat(fd).st_ino)
        return fd

    monkeypatch.setattr(lock, "_open", open_then_holder_ends)
    with output_lock(out) as path:
        assert len(opened) == 2 and os.stat(path).st_ino == opened[1]
        monkeypatch.setattr(lock, "_open", real_open)
        with pytest.raises(InputError, match="another run is writing it"):  # run C
            with output_lock(out):
                pass
    assert not path.exists()


def test_a_holder_never_removes_another_runs_file(tmp_path):
    out = tmp_path / "o.jsonl"
    with output_lock(out) as path:
        path.unlink()  # removed by hand; another run's file put there
        path.write_text("pid 1 on host elsewhere\n")
    assert path.read_text() == "pid 1 on host elsewhere\n"
