"""`--model ORG/NAME[@REVISION]` (runtime.model.hub) against a stand-in of the Hub on 127.0.0.1
(tests.hub_standin) and the cache it fills: downloads only what the model needs, scores as the local
folder does, picks a revision, works offline from the cache, and fails in one line otherwise.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so every run is a
subprocess with its own environment.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import sys
from pathlib import Path

import pytest

from runtime.model.hub import hub_name, needed_files
from runtime.score import main as score_main
from tests.hub_standin import Hub, Standin, folder_files

REPO = Path(__file__).resolve().parents[1]
CAPTION = "a small red square"
UNNEEDED = {"optimizer.pt": os.urandom(3 << 20), "pytorch_model.bin": os.urandom(1 << 20), "README.md": b"# tiny\n"}


def single(image: Path) -> list[str]:
    return ["--image", str(image), "--caption", CAPTION]


def run_score(model: str, mode: list[str], url: str, home: Path, offline: bool = False) -> subprocess.CompletedProcess:
    drop = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env |= {"HF_ENDPOINT": url, "HF_HOME": str(home), "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "runtime.score", "--model", model, *mode], cwd=home.parent,
                          env=env, capture_output=True, text=True, timeout=300)


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


def scores(verdict: dict) -> dict:
    """The verdict less its id, line, timings, model (the folder's name: tiny-aitqe, or the commit) and the
    caption a batch record repeats."""
    return {k: v for k, v in verdict.items() if k not in ("id", "line", "model", "timings", "caption")}


@pytest.mark.slow  # two runs of the command and one in-process: about a minute on 2 busy cores
def test_hub_name_downloads_what_it_needs_scores_as_the_folder_and_then_runs_offline(
        hub, tiny_ckpt, image_dir, tmp_path, capsys):
    image, home = image_dir / "img0.png", tmp_path / "hf"
    hub.requests.clear()
    with Standin(hub) as url:
        proc = run_score("org/tiny", single(image), url, home)
    assert proc.returncode == 0, proc.stderr
    commit = hub.repos["org/tiny"]["main"].sha
    snapshot = home / "hub" / "models--org--tiny" / "snapshots" / commit
    assert f"--model org/tiny: files in {snapshot}" in proc.stderr
    assert sorted(hub.downloaded()) == sorted(folder_files(tiny_ckpt))  # not one unneeded byte
    assert ("GET", "/api/models/org/tiny/revision/main") in hub.requests

    assert score_main(["--model", str(tiny_ckpt), *single(image)]) == 0
    local = json.loads(capsys.readouterr().out)
    assert scores(json.loads(proc.stdout)) == scores(local)
    assert json.loads(proc.stdout)["model"] == commit

    hub.requests.clear()  # batch mode, offline, the server gone: from the cache alone
    pairs, out = tmp_path / "pairs.jsonl", tmp_path / "verdicts.jsonl"
    pairs.write_text(json.dumps({"id": "p0", "image": str(image), "caption": CAPTION}) + "\n")
    offline = run_score("org/tiny", ["--input", str(pairs), "--output", str(out), "--quiet"], "http://127.0.0.1:9",
                        home, offline=True)
    assert offline.returncode == 0, offline.stderr
    assert "files in" not in offline.stderr  # --quiet
    batch = json.loads(out.read_text())
    assert batch["caption"] == CAPTION and scores(batch) == scores(local)
    assert not hub.requests


def test_a_revision_after_at_is_the_one_fetched_for_a_shard_run(hub, image_dir, tmp_path):
    home, shard = tmp_path / "hf", tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tf:
        tf.add(image_dir / "img1.png", "s0.png")
        info = tarfile.TarInfo("s0.txt")
        info.size = len(CAPTION)
        tf.addfile(info, io.BytesIO(CAPTION.encode()))
    hub.requests.clear()
    with Standin(hub) as url:
        proc = run_score("org/tiny@v0", ["--input", str(shard), "--output", str(tmp_path / "verdicts")], url, home)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "verdicts" / "shard-000.aitqe.parquet").is_file()
    commit = hub.repos["org/tiny"]["v0"].sha
    assert f"snapshots/{commit}" in proc.stderr
    assert ("GET", "/api/models/org/tiny/revision/v0") in hub.requests
    assert (home / "hub" / "models--org--tiny" / "refs" / "v0").read_text() == commit
    assert "NOTES.md" not in hub.downloaded()


@pytest.mark.parametrize("offline, says", [(True, "not in the Hugging Face cache"),  # HF_HUB_OFFLINE=1
                                           (False, "http://127.0.0.1:9 cannot be reached")])  # no server there
def test_offline_or_no_network_with_an_empty_cache_is_one_line(offline, says, image_dir, tmp_path):
    proc = run_score("org/tiny", single(image_dir / "img0.png"), "http://127.0.0.1:9", tmp_path / "hf", offline=offline)
    one_line_error(proc, f"--model org/tiny: {says}", "pass a local checkpoint folder")


@pytest.mark.parametrize("model, says", [("org/nope", "no such model on http://127.0.0.1"),
                                         ("org/tiny@nope", "org/tiny has no revision 'nope'")])
def test_an_unknown_repo_or_revision_is_one_line(hub, model, says, image_dir, tmp_path):
    with Standin(hub) as url:
        proc = run_score(model, single(image_dir / "img0.png"), url, tmp_path / "hf")
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


def test_a_bundle_in_the_cache_layout_loads(tmp_path):
    """The cache keeps a snapshot's files as links into the repo's blobs: a bundle there verifies."""
    from quantize.bundle import build_bundle
    from runtime.demo import DEMO_MODEL
    from runtime.formats import method
    from runtime.scorer import Scorer

    build_bundle(DEMO_MODEL, "bf16", method("bf16").config(), tmp_path / "bundle")
    repo = tmp_path / "hub" / "models--org--b"
    snapshot = repo / "snapshots" / ("c0" * 20)
    for rel, data in folder_files(tmp_path / "bundle").items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(os.path.relpath(blob, (snapshot / rel).parent))
    assert Scorer.from_pretrained(snapshot, device="cpu").model_id == snapshot.name
    (snapshot / "vision" / "config.json").unlink()
    (snapshot / "vision" / "config.json").symlink_to(tmp_path / "bundle" / "vision" / "config.json")
    with pytest.raises(ValueError, match="outside the bundle"):
        Scorer.from_pretrained(snapshot, device="cpu")
