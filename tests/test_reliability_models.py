"""Hostile model folders and bundles: every one ends in a one-line `error:` within seconds, before
any module is built (configs checked against the weight headers), and a bundle holds exactly the
files its manifest lists, all inside it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from quantize.__main__ import main as quantize
from runtime.score import main
from tests.test_reliability import deadline, one_line_error, png

GOLDEN = Path(__file__).parent / "data" / "faithfulness" / "checkpoint"


def checkpoint_copy(tmp_path: Path, name: str, edit=None, file: str = "config.json") -> Path:
    root = tmp_path / name
    shutil.copytree(GOLDEN, root)
    if edit is not None:
        path = root / file
        raw = json.loads(path.read_text())
        raw = edit(raw)
        path.write_text(json.dumps(raw))
    return root


def score_fails(root: Path, tmp_path: Path, capsys, seconds: int = 20) -> str:
    image = png(tmp_path / "img.png")
    start = time.perf_counter()
    with deadline(seconds):
        rc = main(["--model", str(root), "--image", str(image), "--caption", "x", "--device", "cpu"])
    assert rc == 1
    err = one_line_error(capsys)
    assert time.perf_counter() - start < seconds
    return err


def setter(**values):
    return lambda raw: {**raw, **values}


@pytest.mark.parametrize("name,edit,file,field", [
    ("layers1e9", setter(num_hidden_layers=1_000_000_000), "config.json", "num_hidden_layers"),
    ("layers1e9float", setter(num_hidden_layers=1e9), "config.json", "num_hidden_layers"),
    ("layers1e5", setter(num_hidden_layers=100_000), "config.json", "num_hidden_layers"),
    ("layers_off_by_one", lambda r: {**r, "num_hidden_layers": r["num_hidden_layers"] + 1}, "config.json",
     "num_hidden_layers"),
    ("vision1e9", setter(num_hidden_layers=1_000_000_000), "siglip/config.json", "num_hidden_layers"),
    ("vision_off", lambda r: {**r, "num_hidden_layers": r["num_hidden_layers"] + 2}, "siglip/config.json",
     "vision num_hidden_layers"),
    ("hidden1e9", setter(hidden_size=1_000_000_000), "config.json", "hidden_size"),
    ("hidden_wrong", lambda r: {**r, "hidden_size": 2 * r["hidden_size"]}, "config.json", "hidden_size"),
    ("vocab_wrong", lambda r: {**r, "vocab_size": r["vocab_size"] + 64}, "config.json", "vocab_size"),
    ("intermediate_wrong", lambda r: {**r, "intermediate_size": r["intermediate_size"] * 3}, "config.json",
     "intermediate_size"),
    ("zero_heads", setter(num_attention_heads=0), "config.json", "num_attention_heads"),
    ("zero_kv", setter(num_key_value_heads=0), "config.json", "num_key_value_heads"),
    ("vision_zero_heads", setter(num_attention_heads=0), "siglip/config.json", "num_attention_heads"),
    ("image_size_huge", setter(image_size=100_000), "siglip/config.json", "image_size"),
    ("string_size", setter(hidden_size="4096"), "config.json", "hidden_size"),
    ("number", lambda raw: 5, "config.json", "not an object"),
    ("list", lambda raw: [1, 2], "siglip/config.json", "not an object"),
    ("eos_beyond", setter(eos_token_id=10 ** 6), "generation_config.json", "eos_token_id"),
    ("pad_beyond", setter(pad_token_id=10 ** 6), "config.json", "pad_token_id"),
])
def test_broken_checkpoint_config_is_one_line_error_in_seconds(tmp_path, capsys, name, edit, file, field):
    root = checkpoint_copy(tmp_path, name, edit, file)
    err = score_fails(root, tmp_path, capsys)
    assert field in err, err


def test_deeply_nested_config_json_is_one_line_error(tmp_path, capsys):
    root = checkpoint_copy(tmp_path, "nested")
    (root / "config.json").write_text("[" * 3000 + "]" * 3000)
    assert "config.json" in score_fails(root, tmp_path, capsys)


def test_fifo_weights_file_is_refused_at_once(tmp_path, capsys):
    root = checkpoint_copy(tmp_path, "fifo")
    (root / "model.safetensors").unlink()
    os.mkfifo(root / "model.safetensors")
    assert "FIFO" in score_fails(root, tmp_path, capsys, seconds=10)


def test_fifo_tokenizer_file_is_refused_at_once(tmp_path, capsys):
    root = checkpoint_copy(tmp_path, "fifo_tok")
    (root / "tokenizer.json").unlink()
    os.mkfifo(root / "tokenizer.json")
    assert "FIFO" in score_fails(root, tmp_path, capsys, seconds=10)


# ---------------------------------------------------------------- bundles

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "bf16"
    assert quantize(["--model", str(GOLDEN), "--method", "bf16", "--output", str(out)]) == 0
    return out


def bundle_copy(bundle: Path, dest: Path, edit=None) -> Path:
    shutil.copytree(bundle, dest)
    if edit is not None:
        d = json.loads((dest / "manifest.json").read_text())
        edit(d, dest)
        (dest / "manifest.json").write_text(json.dumps(d))
    return dest


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_untouched_bundle_scores(bundle, tmp_path, capsys):
    image = png(tmp_path / "img.png")
    assert main(["--model", str(bundle), "--image", str(image), "--caption", "x", "--max-new-tokens", "2"]) == 0


def _outside(d, root):
    secret = root.parent / f"secret-{root.name}.txt"
    secret.write_text("root:x:0:0")
    return secret


def _traversal(d, root):
    d["files"]["../../../../etc/passwd"] = sha(Path("/etc/passwd")) if Path("/etc/passwd").exists() else "0" * 64


def _absolute(d, root):
    secret = _outside(d, root)
    d["files"][str(secret)] = sha(secret)


def _symlink_out(d, root):
    secret = _outside(d, root)
    (root / "vision" / "extra.txt").symlink_to(secret)
    d["files"]["vision/extra.txt"] = sha(secret)


def _unlisted(d, root):
    (root / "backbone" / "chat_template.jinja").write_text("{{ messages }}")


def _empty_files_and_edited_config(d, root):
    cfg = root / "backbone" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "num_hidden_layers": 1}))
    d["files"] = {}


def _drop_config_from_files(d, root):
    d["files"].pop("backbone/config.json")


def _layers_1e9_relisted(d, root):
    cfg = root / "backbone" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "num_hidden_layers": 1_000_000_000}))
    d["files"]["backbone/config.json"] = sha(cfg)


def _vision_layers_1e9_relisted(d, root):
    cfg = root / "vision" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "num_hidden_layers": 1_000_000_000}))
    d["files"]["vision/config.json"] = sha(cfg)


def _vision_path_out(d, root):
    d["vision"][0]["path"] = "../vision"


@pytest.mark.parametrize("name,edit,message", [
    ("traversal", _traversal, "outside the bundle"),
    ("absolute", _absolute, "outside the bundle"),
    ("symlink", _symlink_out, "outside the bundle"),
    ("unlisted", _unlisted, "not in the manifest"),
    ("files_empty", _empty_files_and_edited_config, "files"),
    ("no_files_key", lambda d, r: d.pop("files"), "missing key 'files'"),
    ("files_not_dict", lambda d, r: d.update(files=[]), "files"),
    ("needs_config", _drop_config_from_files, "backbone/config.json"),
    ("image_size", lambda d, r: d["image"].update(size=100_000), "image size 100000"),
    ("image_size_mismatch", lambda d, r: d["image"].update(size=64), "image.size 64"),
    ("image_tokens_mismatch", lambda d, r: d.update(image_tokens=5), "image_tokens 5"),
    ("vision_empty", lambda d, r: d.update(vision=[]), "vision"),
    ("eos_str", lambda d, r: d["eos"].update(ids=["x"]), "eos.ids"),
    ("backbone_path_out", lambda d, r: d["backbone"].update(path="/etc"), "backbone.path"),
    ("vision_path_out", _vision_path_out, "vision.path"),
    ("layers1e9", _layers_1e9_relisted, "num_hidden_layers"),
    ("vision_layers1e9", _vision_layers_1e9_relisted, "num_hidden_layers"),
])
def test_broken_bundle_is_one_line_error_in_seconds(bundle, tmp_path, capsys, name, edit, message):
    root = bundle_copy(bundle, tmp_path / name, edit)
    err = score_fails(root, tmp_path, capsys)
    assert message in err, err


def test_fifo_in_bundle_is_refused_at_once(bundle, tmp_path, capsys):
    root = bundle_copy(bundle, tmp_path / "fifo")
    (root / "backbone" / "model.safetensors").unlink()
    os.mkfifo(root / "backbone" / "model.safetensors")
    assert "FIFO" in score_fails(root, tmp_path, capsys, seconds=10)


def test_onnx_bundle_image_size_must_be_the_graphs(tmp_path, capsys):
    out = tmp_path / "onnx"
    assert quantize(["--model", str(GOLDEN), "--method", "bf16", "--vision", "onnx", "--output", str(out)]) == 0
    capsys.readouterr()
    root = bundle_copy(out, tmp_path / "onnx-64", lambda d, r: d["image"].update(size=64))
    assert "image.size 64 differs" in score_fails(root, tmp_path, capsys)


@pytest.mark.parametrize("file", ["siglip/config.json", "siglip/preprocessor_config.json", "generation_config.json",
                                  "config.json"])
def test_fifo_config_file_is_refused_not_skipped(tmp_path, capsys, file):
    root = checkpoint_copy(tmp_path, "fifo_cfg")
    (root / file).unlink()
    os.mkfifo(root / file)
    assert "FIFO" in score_fails(root, tmp_path, capsys, seconds=10)


def test_fifo_manifest_is_refused_at_once(bundle, tmp_path, capsys):
    root = bundle_copy(bundle, tmp_path / "fifo_manifest")
    (root / "manifest.json").unlink()
    os.mkfifo(root / "manifest.json")
    assert "FIFO" in score_fails(root, tmp_path, capsys, seconds=10)
