"""Every command in the README's "Which command for what" table prints its help and exits 0, and
writes nothing (a command that took `--help` for an output folder would)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("## Which command for what", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"`(python -m [\w.]+|bash [\w./]+)", table)
    return sorted(set(found) | {"python -m bench.device_summary", "python -m bench.device_steps"})  # device_check.sh's


def test_the_table_lists_the_commands():
    cmds = readme_commands()
    assert "python -m runtime.score" in cmds and "bash bench/device_check.sh" in cmds
    assert len(cmds) >= 15, cmds


def _run_help(cmd: str, cwd: Path) -> subprocess.Popen:
    words = cmd.split()
    if words[0] == "python":
        words[0] = sys.executable
    else:
        words[1] = str(ROOT / words[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(words + ["--help"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_every_readme_command_prints_help(tmp_path):
    cmds = readme_commands()
    results = {}
    for start in range(0, len(cmds), 4):  # a few at a time: each imports torch
        procs = {c: _run_help(c, tmp_path / str(i)) for i, c in enumerate(cmds[start:start + 4], start)
                 if (tmp_path / str(i)).mkdir() is None}
        results |= {c: (p.wait(timeout=120), *p.communicate()) for c, p in procs.items()}
    for cmd, (rc, out, err) in results.items():
        assert rc == 0, f"{cmd} --help: exit {rc}\n{err[-2000:]}"
        assert "usage" in out.lower() or "\n" in out.strip(), f"{cmd} --help printed no help: {out!r}"
    made = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()]
    assert not made, f"--help wrote files: {made}"


@pytest.mark.parametrize("module, folder", [("bench.report", "."), ("bench.device_summary", "missing")])
def test_a_folder_without_results_is_one_line_error(module, folder, tmp_path):
    proc = subprocess.run([sys.executable, "-m", module, str(tmp_path / folder)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
