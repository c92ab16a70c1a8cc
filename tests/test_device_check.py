"""bench/device_check.sh on this CPU with tiny shapes: every step within its budget, the whole run within
its printed plan, at most 8 files in OUT, and a run killed half-way keeps the steps before it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def env_for(tmp_path: Path) -> dict:
    return dict(os.environ, OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), SHAPE="tiny", DEVICE="cpu",
                WHEELS="", PYTHON=sys.executable)


def steps(out: Path) -> dict[str, dict]:
    return {s["step"]: s for s in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_device_check_dry_run(tmp_path):
    start = time.monotonic()
    proc = subprocess.run(["bash", "bench/device_check.sh"], cwd=ROOT, env=env_for(tmp_path), capture_output=True,
                          text=True, timeout=1800)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    plan = int(next(x for x in proc.stderr.splitlines() if x.startswith("plan: ")).split()[1])
    assert took <= plan + 60, (took, plan)
    assert len(list(out.iterdir())) <= 8 and {"results.jsonl", "summary.json", "logs.tgz"} <= {p.name for p in out.iterdir()}
    assert "## GPU check summary" in proc.stdout
    done = steps(out)
    for name in ("inputs", "bf16", "attention", "reference"):
        assert done[name]["rc"] == 0, done[name]
    assert done["bf16"]["result"]["batches"]["1"]["decode_steps"]
    assert done["attention"]["result"][0]["grouped_ms"] > 0
    assert "compute capability >= 8.9" in done["fp8-eager"]["error"]  # refused on CPU, in one line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["bf16"]["decode_ms_per_step"] > 0


@pytest.mark.slow
def test_device_check_killed_half_way_keeps_earlier_steps(tmp_path):
    proc = subprocess.Popen(["bash", "bench/device_check.sh"], cwd=ROOT, env=env_for(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = tmp_path / "out" / "results.jsonl"
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and '"step": "bf16"' not in (results.read_text() if results.exists() else ""):
            time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = steps(tmp_path / "out")
    assert done["inputs"]["rc"] == 0 and done["bf16"]["result"]["batches"]["1"]["decode_steps"]
    assert len(list((tmp_path / "out").iterdir())) <= 8


def test_trim_keeps_only_the_named_libraries(tmp_path):
    """fetch_wheels.sh's bitsandbytes trim: the other CUDA builds and their RECORD lines go, the rest stays."""
    import zipfile

    from bench.device_steps import trim

    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    names = ["pkg/__init__.py", "pkg/lib_cpu.so", "pkg/lib_cuda118.so", "pkg/lib_cuda130.so"]
    with zipfile.ZipFile(wheel, "w") as z:
        for n in names:
            z.writestr(n, "x" * 4096)
        z.writestr("pkg-1.0.dist-info/RECORD", "".join(f"{n},sha256=x,4096\n" for n in names) + "pkg-1.0.dist-info/RECORD,,\n")
    before, after = trim(wheel, ["_cpu.", "_cuda130."])
    assert after < before
    with zipfile.ZipFile(wheel) as z:
        assert set(z.namelist()) == set(names) - {"pkg/lib_cuda118.so"} | {"pkg-1.0.dist-info/RECORD"}
        assert "cuda118" not in z.read("pkg-1.0.dist-info/RECORD").decode()
    assert "cuda130" in subprocess.run([sys.executable, "-m", "bench.device_steps", "trim", str(wheel), "_cuda130."],
                                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
