"""Checkpoint loading: every released storage form, strictness, vision config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from runtime.model.checkpoint import load_checkpoint
from bench.synthetic.checkpoints import FixtureSpec, random_checkpoint
from runtime.model.config import load_config
from runtime.errors import InputError


def vision_out(ck, seed=0):
    pixels = torch.randn(2, 3, ck.config.vision.image_size, ck.config.vision.image_size,
                         generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return ck.vision(pixels), ck.llm(input_ids=torch.tensor([[1, 2, 3]])).logits


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    return vision_out(load_checkpoint(tiny_ckpt))


@pytest.mark.parametrize("fmt,shard_bytes", [("safetensors", 40_000), ("bin", None), ("bin", 40_000)])
def test_sharded_and_bin_checkpoints_load_identically(tmp_path, reference, fmt, shard_bytes):
    root = random_checkpoint(tmp_path / "ck", FixtureSpec(), seed=0, shard_bytes=shard_bytes, fmt=fmt)
    assert len(list(root.glob("*.bin" if fmt == "bin" else "*.safetensors"))) > (1 if shard_bytes else 0)
    vis, logits = vision_out(load_checkpoint(root))
    assert torch.equal(vis, reference[0]) and torch.equal(logits, reference[1])


def test_loads_in_requested_dtype_and_drops_dead_vision_weights(tiny_ckpt):
    ck = load_checkpoint(tiny_ckpt, dtype=torch.bfloat16)
    assert {p.dtype for p in ck.llm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in ck.vision.parameters()} == {torch.bfloat16}
    assert len(ck.vision.encoder.layers) == ck.config.vision.num_hidden_layers - 1
    names = {n for n, _ in ck.vision.named_parameters()}
    assert not any(n.startswith(("post_layernorm", "head")) for n in names)
    assert ck.image_newline.shape == (ck.config.llm.hidden_size,)


def copy_ckpt(src, dst):
    shutil.copytree(src, dst)
    return dst


def edit_weights(root, fn):
    state = load_file(root / "model.safetensors")
    fn(state)
    save_file(state, root / "model.safetensors")


def test_missing_unknown_and_misshaped_weights_are_refused(tiny_ckpt, tmp_path):
    cases = {
        "missing": (lambda s: s.pop("vision_model.vision_model.encoder.layers.0.mlp.fc1.weight"),
                    "1 weights missing"),
        "unknown": (lambda s: s.__setitem__("extra.weight", torch.zeros(2)), "unexpected tensor 'extra.weight'"),
        "shape": (lambda s: s.__setitem__("mm_projector.2.weight", torch.zeros(3, 3)), "shape (3, 3)"),
    }
    for name, (fn, message) in cases.items():
        root = copy_ckpt(tiny_ckpt, tmp_path / name)
        edit_weights(root, fn)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_checkpoint(root)


def test_dead_weights_may_be_absent_and_newer_vision_prefix_loads(tiny_ckpt, tmp_path, reference):
    root = copy_ckpt(tiny_ckpt, tmp_path / "renamed")
    layers = json.loads((root / "siglip" / "config.json").read_text())["num_hidden_layers"]

    def rename(state):
        for k in list(state):
            if k.startswith("vision_model.vision_model."):
                t = state.pop(k)
                rest = k[len("vision_model.vision_model."):]
                if not rest.startswith(("head.", "post_layernorm.", f"encoder.layers.{layers - 1}.")):
                    state["vision_model." + rest] = t
    edit_weights(root, rename)
    vis, logits = vision_out(load_checkpoint(root))
    assert torch.equal(vis, reference[0]) and torch.equal(logits, reference[1])


def test_broken_files_give_one_line_errors(tiny_ckpt, tmp_path):
    root = copy_ckpt(tiny_ckpt, tmp_path / "broken")
    (root / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot read weights") as e:
        load_checkpoint(root)
    assert "\n" not in str(e.value)
    (root / "model.safetensors").unlink()
    with pytest.raises(InputError, match="no weights"):
        load_checkpoint(root)
    with pytest.raises(InputError, match="no config.json"):
        load_checkpoint(tmp_path)


def test_bin_files_are_never_unpickled_beyond_tensors(tiny_ckpt, tmp_path):
    root = copy_ckpt(tiny_ckpt, tmp_path / "pickle")
    (root / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"model.embed_tokens.weight": Evil()}, root / "pytorch_model.bin")
    with pytest.raises(InputError, match="cannot read weights"):
        load_checkpoint(root)


def test_unreadable_vision_config_falls_back_to_so400m_and_checks_shapes(tiny_ckpt, tmp_path):
    root = copy_ckpt(tiny_ckpt, tmp_path / "hubid")
    raw = json.loads((root / "config.json").read_text())
    raw["vision_model_name_or_path"] = "google/siglip-so400m-patch14-384"
    (root / "config.json").write_text(json.dumps(raw))
    cfg = load_config(root)
    assert cfg.vision_config_source == "so400m defaults"
    assert (cfg.vision.hidden_size, cfg.vision.num_hidden_layers, cfg.image.size) == (1152, 27, 64)
    with pytest.raises(InputError, match="so400m defaults"):
        load_checkpoint(root)


def test_vision_config_read_from_absolute_path(tiny_ckpt, tmp_path):
    root = copy_ckpt(tiny_ckpt, tmp_path / "abs")
    shutil.move(root / "siglip", tmp_path / "elsewhere")
    raw = json.loads((root / "config.json").read_text())
    raw["vision_model_name_or_path"] = str(tmp_path / "elsewhere")
    (root / "config.json").write_text(json.dumps(raw))
    assert load_config(root).vision.hidden_size == FixtureSpec().vision_hidden


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_loading_holds_one_copy_of_the_weights(tmp_path, dtype):
    """Two copies would give a ratio >= 2; streaming gives ~1 plus fixed overhead and one shard."""
    from bench.load_memory import SIZES, measure

    root = random_checkpoint(tmp_path / "small", FixtureSpec(**SIZES["small"]), shard_bytes=16 * 2**20)
    r = measure(root, dtype)
    assert r["weight_bytes"] > 150 * 2**20
    assert r["ratio"] < 1.5, r


RELEASED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                  "merges.txt", "special_tokens_map.json", "added_tokens.json")
TEXTS = ["\nEvaluate the caption: Ein Café in Zürich — 東京の夜景 🌃 <|im_start|>x\nif score is low",
         '{"Recaption": "a big red circle", "Overall Score": "10<Overall>", "Text Quality Score": 7}',
         "  two cats\non a sofa...  "]


@pytest.mark.parametrize("which", ["golden", "fixture", "demo"])
def test_checkpoints_are_in_the_released_layout(tiny_ckpt, tmp_path, which):
    """What the original code needs to load and run a checkpoint (transformers 4.41, slow tokenizer),
    checked on the original's own saved checkpoint too, so the check itself is the original's layout."""
    from transformers import AutoTokenizer, PretrainedConfig, Qwen2Tokenizer

    from runtime.demo import DEMO_MODEL

    root = {"golden": Path(__file__).parent / "data" / "faithfulness" / "checkpoint", "fixture": tiny_ckpt,
            "demo": DEMO_MODEL}[which]
    assert all((root / f).is_file() for f in RELEASED_FILES)
    cfg = json.loads((root / "config.json").read_text())
    assert {"bos_token_id", "eos_token_id", "pad_token_id", "sliding_window"} <= set(cfg)
    assert json.loads((root / "generation_config.json").read_text())["eos_token_id"] == cfg["eos_token_id"]
    assert json.loads((root / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2Tokenizer"
    siglip = root / cfg["vision_model_name_or_path"]
    assert "crop_size" in json.loads((siglip / "preprocessor_config.json").read_text())
    assert json.loads((siglip / "config.json").read_text())["model_type"] == "siglip_vision_model"
    slow_files = tmp_path / "slow"
    slow_files.mkdir()
    for f in RELEASED_FILES[3:]:
        shutil.copy(root / f, slow_files / f)
    slow = Qwen2Tokenizer.from_pretrained(slow_files)  # built from vocab.json + merges.txt alone
    fast = AutoTokenizer.from_pretrained(root, config=PretrainedConfig())
    assert len(slow) == len(fast)
    for text in TEXTS:
        assert slow(text, add_special_tokens=False).input_ids == fast(text, add_special_tokens=False).input_ids
