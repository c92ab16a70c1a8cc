"""A dataset run killed with SIGKILL at random points, then rerun, ends with the same rows and the
same enhanced shards as an uninterrupted run: no key lost, none duplicated, no partial file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runtime.demo.shards import pairs, write_webdataset
from runtime.score import main

REPO = Path(__file__).resolve().parents[1]
SHARDS, PAIRS = 6, 8


def command(folder: Path, out: Path, enhanced: Path) -> list[str]:
    return [sys.executable, "-m", "runtime.score", "--model", "demo", "--input", str(folder), "--output", str(out),
            "--enhance-below", "6", "--enhanced-output", str(enhanced), "--device", "cpu", "--quiet",
            "--batch-size", "4"]


def start(folder: Path, out: Path, enhanced: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command(folder, out, enhanced), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def outputs(out: Path, enhanced: Path) -> tuple[dict, dict]:
    rows = {p.name: pq.read_table(p).to_pylist() for p in sorted(out.glob("*.aitqe.parquet"))}
    tars = {p.name: p.read_bytes() for p in sorted(enhanced.glob("*.tar"))}
    return rows, tars


@pytest.mark.slow  # 25-50 s here (by load): four processes start torch and the model
def test_sigkill_at_random_points_then_rerun_gives_the_same_rows(tmp_path):
    folder = tmp_path / "in"
    keys = {}
    for s in range(SHARDS):
        data = pairs(s, PAIRS)
        write_webdataset(folder, s, data)
        keys[f"{s:05d}.aitqe.parquet"] = [p["key"] for p in data]
    ref_out, ref_enh = tmp_path / "ref", tmp_path / "ref-enh"
    assert main(command(folder, ref_out, ref_enh)[3:]) == 0
    reference = outputs(ref_out, ref_enh)
    assert {n: [r["key"] for r in rows] for n, rows in reference[0].items()} == keys

    rng = random.Random(15)
    out, enh = tmp_path / "out", tmp_path / "enh"
    for target in (1, 3, 5):  # kill once this many shards are done, a random moment later
        proc = start(folder, out, enh)
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.aitqe.parquet"))) < target and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rows, tars = outputs(out, enh)  # whatever exists is whole
        assert 0 < len(rows) <= SHARDS
        for name, got in rows.items():
            assert got == reference[0][name]
        for name in tars:
            with tarfile.open(enh / name) as tf:
                tf.getmembers()
    proc = start(folder, out, enh)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    assert outputs(out, enh) == reference
    assert not [p for p in [*out.iterdir(), *enh.iterdir()] if p.name.startswith(".tmp-")]
