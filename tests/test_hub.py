"""`--model ORG/NAME[@REVISION]` (runtime.model.hub) against a stand-in of the Hub on 127.0.0.1
(tests.hub_standin) and the cache it fills: downloads only what the model needs, scores as the local
folder does, picks a revision, works offline from the cache, and fails in one line otherwise.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so every run is a
subprocess with its own environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.model.hub import hub_name, needed_files
from runtime.score import main as score_main
from tests.hub_standin import Hub, Standin, folder_files

REPO = Path(__file__).resolve().parents[1]
CAPTION = "a small red square"
UNNEEDED = {"optimizer.pt": os.urandom(3 << 20), "pytorch_model.bin": os.urandom(1 << 20), "README.md": b"# tiny\n"}


def run_score(model: str, image: Path, url: str, home: Path, offline: bool = False) -> subprocess.CompletedProcess:
    drop = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env |= {"HF_ENDPOINT": url, "HF_HOME": str(home), "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "runtime.score", "--model", model, "--image", str(image),
                           "--caption", CAPTION], cwd=home.parent, env=env, capture_output=True, text=True,
                          timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, *parts: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for part in parts:
        assert part in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def hub(tiny_ckpt):
    h = Hub()
    needed = folder_files(tiny_ckpt)
    h.add("org/tiny", "main", {**needed, **UNNEEDED})
    h.add("org/tiny", "v0", {**needed, "NOTES.md": b"the first upload\n"})
    return h


def without_model(verdict: dict) -> dict:
    """The verdict less its timings and its model (the folder's name: tiny-aitqe, or the commit)."""
    return {k: v for k, v in verdict.items() if k not in ("model", "timings")}


def test_hub_name_downloads_what_it_needs_scores_as_the_folder_and_then_runs_offline(
        hub, tiny_ckpt, image_dir, tmp_path, capsys):
    image, home = image_dir / "img0.png", tmp_path / "hf"
    hub.requests.clear()
    with Standin(hub) as url:
        proc = run_score("org/tiny", image, url, home)
    assert proc.returncode == 0, proc.stderr
    commit = hub.repos["org/tiny"]["main"].sha
    snapshot = home / "hub" / "models--org--tiny" / "snapshots" / commit
    assert f"--model org/tiny: files in {snapshot}" in proc.stderr
    assert sorted(hub.downloaded()) == sorted(folder_files(tiny_ckpt))  # not one unneeded byte
    assert ("GET", "/api/models/org/tiny/revision/main") in hub.requests

    assert score_main(["--model", str(tiny_ckpt), "--image", str(image), "--caption", CAPTION]) == 0
    local = json.loads(capsys.readouterr().out)
    assert without_model(json.loads(proc.stdout)) == without_model(local)
    assert json.loads(proc.stdout)["model"] == commit

    hub.requests.clear()
    offline = run_score("org/tiny", image, "http://127.0.0.1:9", home, offline=True)  # the server is gone too
    assert offline.returncode == 0, offline.stderr
    assert without_model(json.loads(offline.stdout)) == without_model(local)
    assert not hub.requests


def test_a_revision_after_at_is_the_one_fetched(hub, image_dir, tmp_path):
    home = tmp_path / "hf"
    hub.requests.clear()
    with Standin(hub) as url:
        proc = run_score("org/tiny@v0", image_dir / "img1.png", url, home)
    assert proc.returncode == 0, proc.stderr
    commit = hub.repos["org/tiny"]["v0"].sha
    assert f"snapshots/{commit}" in proc.stderr
    assert ("GET", "/api/models/org/tiny/revision/v0") in hub.requests
    assert (home / "hub" / "models--org--tiny" / "refs" / "v0").read_text() == commit
    assert "NOTES.md" not in hub.downloaded()


def test_offline_with_an_empty_cache_is_one_line(image_dir, tmp_path):
    proc = run_score("org/tiny", image_dir / "img0.png", "http://127.0.0.1:9", tmp_path / "hf", offline=True)
    one_line_error(proc, "--model org/tiny: not in the Hugging Face cache", "HF_HUB_OFFLINE")


@pytest.mark.parametrize("model, says", [("org/nope", "no such model on http://127.0.0.1"),
                                         ("org/tiny@nope", "org/tiny has no revision 'nope'")])
def test_an_unknown_repo_or_revision_is_one_line(hub, model, says, image_dir, tmp_path):
    with Standin(hub) as url:
        proc = run_score(model, image_dir / "img0.png", url, tmp_path / "hf")
    one_line_error(proc, f"--model {model}: {says}")


def test_what_counts_as_a_hub_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert hub_name("hanhuang22/AITQE") == ("hanhuang22/AITQE", None)
    assert hub_name("hanhuang22/AITQE@v1.0") == ("hanhuang22/AITQE", "v1.0")
    for local in ("./org/name", "/models/aitqe", "~/aitqe", "runs/aitqe", "aitqe", "a/b/c", "demo"):
        assert hub_name(local) is None, local  # a path: today's one-line errors for a missing folder


def test_only_the_files_each_kind_reads(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"files": {"backbone/model.safetensors": "0" * 64,
                                                                "tokenizer/[x].json": "0" * 64, "../up": "0"}}))
    assert needed_files(bundle, "org/b", "--model org/b") == [
        "manifest.json", "backbone/model.safetensors", "tokenizer/[[]x].json"]
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    (gguf / "aitqe_gguf.json").write_text(json.dumps({"files": {"language_model": "m-f16.gguf",
                                                                "tokenizer": "tokenizer"}}))
    assert needed_files(gguf, "org/g", "--model org/g") == [
        "aitqe_gguf.json", "m-f16.gguf", "m-f16.gguf/*", "tokenizer", "tokenizer/*"]
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ValueError, match="not an AITQE checkpoint, bundle or GGUF export"):
        needed_files(other, "org/o", "--model org/o")
