"""`--quiet` is quiet: a batch run prints its summary line and nothing else on stderr (but the demo
model's one note of what it is), even with the libraries set to be chatty; without it the same run shows their lines (so the check means something).
And no lock file stays beside the output."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from runtime.quiet import ENV, quiet

ROOT = Path(__file__).resolve().parents[1]
CHATTY = {"TRANSFORMERS_VERBOSITY": "info", "PYTHONWARNINGS": "always"}


def batch(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "a", "image": str(ROOT / "examples/yellow_triangle.png"),
                                 "caption": "small yellow triangle center"}) + "\n")
    out = tmp_path / f"out{len(flags)}.jsonl"
    env = {**os.environ, **CHATTY, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "runtime.score", "--input", str(pairs), "--output", str(out),
                           "--model", str(ROOT / "runtime/demo/aitqe-demo"), "--max-new-tokens", "4", *flags],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_quiet_batch_run_prints_only_its_summary(tmp_path):
    run = batch(tmp_path, "--quiet")
    assert run.returncode == 0, run.stderr
    *before, line = run.stderr.splitlines()
    assert line.startswith("1 pairs scored into ") and line.endswith("out1.jsonl (0 with errors, 0 already done)")
    assert [b.split(":")[0] for b in before] in ([], ["note"]), before  # the demo model says what it is, once
    loud = batch(tmp_path)
    assert loud.returncode == 0 and "[transformers]" in loud.stderr, loud.stderr
    assert not list(tmp_path.glob("*.lock"))


def test_quiet_silences_library_warnings_and_restores_everything():
    before_env = {k: os.environ.get(k) for k in ENV}
    before_level = logging.root.manager.disable
    with quiet():
        assert not logging.getLogger("transformers.some_module").isEnabledFor(logging.WARNING)
        assert all(os.environ[k] == v for k, v in ENV.items())
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn("a library's warning")
        assert seen == []
    assert {k: os.environ.get(k) for k in ENV} == before_env and logging.root.manager.disable == before_level
    with quiet(False):
        assert logging.getLogger("transformers.some_module").isEnabledFor(logging.WARNING)
