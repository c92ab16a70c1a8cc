"""Every command in the README's "Which command for what" table prints its help and exits 0, fast,
without importing the model code (torch, transformers, pyarrow, onnxruntime, llama.cpp), and writes
nothing (a command that took `--help` for an output folder would); a mistyped flag exits 2 as fast.
`aitqe SUBCOMMAND` is the same command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def table_commands() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("## Which command for what", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(python -m [\w.]+|bash [\w./]+)", table))


def readme_commands() -> list[str]:
    return sorted(table_commands() | {"python -m bench.device_summary", "python -m bench.device_steps"})  # device_check.sh's


def test_the_table_lists_the_commands():
    cmds = readme_commands()
    assert "python -m runtime.score" in cmds and "bash bench/device_check.sh" in cmds
    assert len(cmds) >= 15, cmds


HEAVY = ("torch", "transformers", "pyarrow", "onnxruntime", "llama_cpp")
SECONDS = 3.0

# runs a module as `python -m` would, then says (as JSON on the last line of stderr) its exit code, how long it
# took and which heavy libraries it imported
PROBE = """
import json, runpy, sys, time
start, code = time.perf_counter(), 0
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
heavy = [m for m in %r if m in sys.modules]
print(json.dumps({"code": code, "seconds": time.perf_counter() - start, "heavy": heavy}), file=sys.stderr)
""" % (HEAVY,)


def env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run(cmd: str, *args: str, cwd: Path) -> tuple[int, str, str, float, list[str]]:
    """(exit code, stdout, stderr less the probe's line, seconds, heavy libraries imported) of `cmd args`."""
    words = cmd.split()
    start = time.perf_counter()
    if words[0] == "bash":
        proc = subprocess.run(["bash", str(ROOT / words[1]), *args], cwd=cwd, env=env(), capture_output=True,
                              text=True, timeout=120)
        return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start, []
    proc = subprocess.run([sys.executable, "-c", PROBE, words[2], *args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=120)
    err, _, last = proc.stderr.rstrip("\n").rpartition("\n")
    got = json.loads(last)
    return got["code"], proc.stdout, err, got["seconds"], got["heavy"]


@pytest.mark.parametrize("cmd", readme_commands())
def test_every_readme_command_prints_help(cmd, tmp_path):
    rc, out, err, seconds, heavy = run(cmd, "--help", cwd=tmp_path)
    assert rc == 0, f"{cmd} --help: exit {rc}\n{err[-2000:]}"
    assert "usage" in out.lower() or "\n" in out.strip(), f"{cmd} --help printed no help: {out!r}"
    made = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()]
    assert not made, f"--help wrote files: {made}"


@pytest.mark.parametrize("cmd", readme_commands())
def test_help_is_fast_and_imports_no_model_code(cmd, tmp_path):
    rc, _, err, seconds, heavy = run(cmd, "--help", cwd=tmp_path)
    assert rc == 0, err[-2000:]
    assert not heavy, f"{cmd} --help imported {heavy}"
    assert seconds < SECONDS, f"{cmd} --help took {seconds:.1f} s"


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if c.startswith("python")])
def test_a_mistyped_flag_is_exit_2_at_once(cmd, tmp_path):
    rc, out, err, seconds, heavy = run(cmd, "--no-such-flag", cwd=tmp_path)
    assert rc == 2, f"{cmd} --no-such-flag: exit {rc}\n{err[-2000:]}"
    assert not heavy and seconds < SECONDS, (heavy, seconds)


def test_aitqe_names_every_command():
    from runtime.cli import COMMANDS

    modules = {module for module, _ in COMMANDS.values()}
    missing = [c for c in table_commands() if c.startswith("python") and c.split()[2] not in modules]
    assert not missing, f"no aitqe subcommand for {missing}"


def test_aitqe_help_lists_the_subcommands(tmp_path):
    from runtime.cli import COMMANDS

    rc, out, err, seconds, heavy = run("python -m runtime.cli", "--help", cwd=tmp_path)
    assert rc == 0 and not heavy and seconds < SECONDS, (rc, heavy, seconds, err)
    assert all(f"  {name} " in out for name in COMMANDS), out


def test_aitqe_score_is_runtime_score(tmp_path):
    rc, out, _, seconds, heavy = run("python -m runtime.cli", "score", "--help", cwd=tmp_path)
    assert (rc, heavy) == (0, []) and seconds < SECONDS
    assert out == run("python -m runtime.score", "--help", cwd=tmp_path)[1]


def test_aitqe_unknown_subcommand_is_one_line_exit_2(tmp_path):
    rc, out, err, _, _ = run("python -m runtime.cli", "scroe", cwd=tmp_path)
    assert rc == 2 and not out and err.startswith("error: ") and "\n" not in err, err  # the probe took the newline


def test_the_parsers_names_are_the_registries():
    import bench.attention
    import bench.tower
    from bench.synthetic.checkpoints import SHAPES
    from runtime import defaults
    from runtime.model.checkpoint import DTYPES
    from runtime.scorer import ENGINES

    assert defaults.ENGINES == ENGINES
    assert defaults.DTYPE_NAMES == tuple(DTYPES)
    assert bench.tower.SHAPE_NAMES == tuple(SHAPES)
    assert bench.attention.SHAPE_NAMES == tuple(bench.attention.shapes())


@pytest.mark.parametrize("module, folder", [("bench.report", "."), ("bench.device_summary", "missing")])
def test_a_folder_without_results_is_one_line_error(module, folder, tmp_path):
    proc = subprocess.run([sys.executable, "-m", module, str(tmp_path / folder)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
