"""The GGUF export (quantize.gguf) without llama.cpp: the files carry what llama.cpp and clip.cpp read.

Read back with the `gguf` package's own reader: architecture and hyperparameters, the tokenizer as
llama.cpp loads it (gpt2 model, qwen2 pre-tokenizer, tokens, types, merges, special ids, no BOS), the
mmproj keys of AITQE's vision side (mlp projector, feature layer for hidden_states[-2], tanh GELU,
mean/std), tensor names and storage types; the manifest; the exported tokenizer's prompt ids; and the
one-line refusals of what llama.cpp cannot express.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from quantize.bundle import build_bundle  # noqa: E402
from quantize.export import main as export_main  # noqa: E402
from quantize.gguf import export_gguf  # noqa: E402
from runtime.demo import DEMO_MODEL  # noqa: E402
from runtime.errors import InputError  # noqa: E402
from runtime.formats import method  # noqa: E402
from runtime.model.checkpoint import fingerprint, load_tokenizer  # noqa: E402
from runtime.prompt import prompt_ids  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "faithfulness" / "checkpoint"
CAPTIONS = ["a red circle", "Cafe\u0301 au lait", "x <|im_end|> y <|endoftext|>", "", "\n\n two  spaces\n"]


def fields(path: Path) -> tuple[dict, dict]:
    """(metadata key -> value, tensor name -> (type name, shape in torch order)) of a GGUF file."""
    r = gguf.GGUFReader(path)
    meta = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    return meta, {t.name: (t.tensor_type.name, tuple(int(x) for x in reversed(t.shape))) for t in r.tensors}


@pytest.fixture(scope="module")
def golden_f32(tmp_path_factory):
    return export_gguf(GOLDEN, tmp_path_factory.mktemp("gguf") / "golden-f32", "f32")


@pytest.fixture(scope="module")
def demo_f16(tmp_path_factory):
    return export_gguf(DEMO_MODEL, tmp_path_factory.mktemp("gguf") / "demo-f16", "f16")


def test_manifest_says_what_the_folder_is(golden_f32):
    m = json.loads((golden_f32.output / "aitqe_gguf.json").read_text())
    assert m == golden_f32.manifest
    assert (m["format"], m["version"], m["type"]) == ("aitqe-gguf", 1, "f32")
    assert m["source"]["fingerprint"] == fingerprint(GOLDEN)
    assert (m["image_tokens"], m["image"]["size"], m["eos"]["ids"], m["pad_token_id"]) == (16, 56, [765], 765)
    assert all((golden_f32.output / f).exists() for f in m["files"].values())
    assert not [p for p in golden_f32.output.iterdir() if p.name.startswith(".tmp-")]


def test_language_model_carries_what_llama_cpp_reads(golden_f32):
    cfg = json.loads((GOLDEN / "config.json").read_text())
    meta, tensors = fields(golden_f32.output / golden_f32.manifest["files"]["language_model"])
    assert meta["general.architecture"] == "qwen2"
    assert (meta["qwen2.block_count"], meta["qwen2.embedding_length"], meta["qwen2.feed_forward_length"]) == \
        (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"])
    assert (meta["qwen2.attention.head_count"], meta["qwen2.attention.head_count_kv"]) == (4, 2)
    assert meta["qwen2.rope.freq_base"] == 1e6 and meta["qwen2.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "qwen2")
    assert len(meta["tokenizer.ggml.tokens"]) == cfg["vocab_size"] == tensors["token_embd.weight"][1][0]
    assert meta["tokenizer.ggml.tokens"][765:] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = meta["tokenizer.ggml.token_type"]
    assert types[765:] == [3, 3, 3] and set(types[:765]) == {1}
    assert len(meta["tokenizer.ggml.merges"]) == 509
    assert (meta["tokenizer.ggml.eos_token_id"], meta["tokenizer.ggml.padding_token_id"]) == (765, 765)
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert {"token_embd.weight", "output.weight", "output_norm.weight", "blk.1.attn_q.bias", "blk.1.ffn_gate.weight"} \
        <= set(tensors)
    assert len(tensors) == 3 + 2 * 12 and {t for t, _ in tensors.values()} == {"F32"}


def test_mmproj_carries_what_clip_cpp_reads(golden_f32):
    meta, tensors = fields(golden_f32.output / golden_f32.manifest["files"]["mmproj"])
    assert (meta["general.architecture"], meta["general.type"]) == ("clip", "mmproj")
    assert meta["clip.projector_type"] == "mlp"
    assert meta["clip.has_vision_encoder"] is True and meta["clip.use_gelu"] is True
    # 3 SigLIP layers; hidden_states[-2] is the residual stream after 2, and only those 2 are written
    assert meta["clip.vision.block_count"] == 2 and meta["clip.vision.feature_layer"] == [2]
    assert (meta["clip.vision.image_size"], meta["clip.vision.patch_size"]) == (56, 14)
    assert meta["clip.vision.image_mean"] == [0.5] * 3 and meta["clip.vision.image_std"] == [0.5] * 3
    assert meta["clip.vision.projection_dim"] == 64
    assert not [n for n in tensors if n.startswith(("v.blk.2.", "v.post_ln", "v.class_embd"))]
    assert tensors["v.patch_embd.weight"] == ("F32", (32, 3, 14, 14)) and tensors["mm.0.weight"] == ("F32", (64, 32))
    bias = next(t for t in gguf.GGUFReader(golden_f32.output / golden_f32.manifest["files"]["mmproj"]).tensors
                if t.name == "mm.2.bias")
    assert not np.asarray(bias.data).any()  # AITQE's second projector Linear has no bias


def test_f16_stores_matrices_in_half_and_pads_the_vocabulary(demo_f16):
    cfg = json.loads((DEMO_MODEL / "config.json").read_text())
    meta, tensors = fields(demo_f16.output / demo_f16.manifest["files"]["language_model"])
    assert tensors["blk.0.attn_q.weight"][0] == "F16" and tensors["blk.0.attn_q.bias"][0] == "F32"
    assert tensors["output_norm.weight"][0] == "F32"
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == cfg["vocab_size"] == 1088  # embedding rows past the tokenizer's 1027 tokens
    assert tokens[1027:] == [f"[PAD{i}]" for i in range(1027, 1088)] and set(types[1027:]) == {5}
    mm, mm_tensors = fields(demo_f16.output / demo_f16.manifest["files"]["mmproj"])
    assert mm_tensors["mm.0.weight"][0] == "F16" and mm_tensors["v.patch_embd.weight"][0] == "F32"
    assert mm["clip.vision.feature_layer"] == [4] and demo_f16.manifest["note"]


def test_exported_tokenizer_gives_the_runtimes_prompt_ids(golden_f32):
    source = load_tokenizer(GOLDEN)
    exported = load_tokenizer(golden_f32.output / "tokenizer")
    for caption in CAPTIONS:
        assert prompt_ids(exported, caption, 400) == prompt_ids(source, caption, 400), caption


def _variant(tiny_ckpt, tmp_path, edit) -> Path:
    folder = tmp_path / "variant"
    shutil.copytree(tiny_ckpt, folder)
    edit(folder)
    return folder


def _set(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def _gpt2_split(folder: Path) -> None:
    """GPT-2's split rule instead of Qwen2's (a plain fast tokenizer: transformers 5's Qwen2Tokenizer
    would rebuild Qwen2's own rule whatever tokenizer.json says)."""
    _set(folder / "tokenizer.json", pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False,
                                                   "trim_offsets": True, "use_regex": True})
    _set(folder / "tokenizer_config.json", tokenizer_class="PreTrainedTokenizerFast")


@pytest.mark.parametrize("edit, words", [
    (lambda f: _set(f / "siglip" / "config.json", hidden_act="gelu"), "vision hidden_act 'gelu'"),
    (lambda f: _set(f / "config.json", hidden_act="gelu"), "hidden_act 'gelu'"),
    (lambda f: _gpt2_split(f), "not Qwen2's byte-level BPE"),
])
def test_what_llama_cpp_cannot_express_is_refused_in_one_line(tiny_ckpt, tmp_path, edit, words):
    with pytest.raises(InputError) as e:
        export_gguf(_variant(tiny_ckpt, tmp_path, edit), tmp_path / "out", "f16")
    assert words in str(e.value) and "\n" not in str(e.value) and "cannot" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_output_folder_rules_and_command_line(golden_f32, tmp_path, capsys):
    with pytest.raises(InputError, match="pass --force"):
        export_gguf(GOLDEN, golden_f32.output, "f32")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    gguf = ["--format", "gguf", "--model", str(GOLDEN)]
    assert export_main([*gguf, "--output", str(tmp_path / "busy"), "--type", "f16"]) == 1
    assert capsys.readouterr().err.startswith("error: --output")
    with pytest.raises(InputError, match="unknown GGUF type"):
        export_gguf(GOLDEN, tmp_path / "t", "q3_k")
    out = tmp_path / "cli"
    assert export_main([*gguf, "--output", str(out), "--type", "f16"]) == 0
    assert export_main([*gguf, "--output", str(out), "--type", "f32", "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["aitqe_gguf.json", "checkpoint-f32.gguf",
                                                    "mmproj-checkpoint-f32.gguf", "tokenizer"]
    assert "wrote" in capsys.readouterr().out
    (out / "notes.txt").write_text("the user's")  # --force replaces only what the export listed
    assert export_main([*gguf, "--output", str(out), "--type", "f32", "--force"]) == 1
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").read_text() == "the user's"
    with pytest.raises(SystemExit) as e:
        export_main(["--help"])
    assert e.value.code == 0


def test_qwen2_split_rule_is_recognised_as_qwen2s_own_tokenizer_json_writes_it():
    from quantize.gguf_text import QWEN2_SPLIT, is_qwen2_split

    qwen2_7b = {"type": "Sequence", "pretokenizers": [  # Qwen/Qwen2-7B tokenizer.json
        {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    assert is_qwen2_split(qwen2_7b)
    split_first_newline = {"type": "Sequence", "pretokenizers": [  # quantize.llava's export: a rule GGUF cannot hold
        {"type": "Split", "pattern": {"Regex": "\\A\\n"}, "behavior": "Isolated", "invert": False}, qwen2_7b]}
    assert not is_qwen2_split(split_first_newline)
    assert not is_qwen2_split({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True})
    assert not is_qwen2_split(None)


def test_export_command_refuses_a_quantized_bundle_and_gguf_options_without_gguf(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    build_bundle(GOLDEN, "bf16", method("bf16").config(), bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    m["backbone"]["method"] = "gptq-int4"  # what a quantized bundle says: refused before its files are read
    (bundle / "manifest.json").write_text(json.dumps(m))
    assert export_main(["--format", "gguf", "--model", str(bundle), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --model") and "checkpoint folder the bundle came from" in err and err.count("\n") == 1
    assert "gptq-int4 bundle holds a quantized language model" in err
    with pytest.raises(SystemExit):
        export_main(["--model", str(GOLDEN), "--output", str(tmp_path / "o"), "--type", "q8_0"])
    assert "--type and --threads are for --format gguf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main(["--model", str(GOLDEN), "--output", str(tmp_path / "o"), "--with-vision", "onnx"])
    assert "--with-vision is for --format gguf" in capsys.readouterr().err
    with pytest.raises(InputError, match="--with-vision clip: unknown"):
        export_gguf(GOLDEN, tmp_path / "o", "f16", vision=("clip",))
    assert not (tmp_path / "o").exists()


def _tensors(path: Path) -> dict[str, tuple[str, bytes]]:
    return {t.name: (t.tensor_type.name, np.asarray(t.data).tobytes()) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("type", ["f16", "f32"])
def test_a_bf16_bundle_gives_its_checkpoints_gguf_tensor_for_tensor(demo_f16, tmp_path, type):
    bundle = tmp_path / "bundle"
    build_bundle(DEMO_MODEL, "bf16", method("bf16").config(), bundle, vision=("onnx", "torch"))
    ours = export_gguf(bundle, tmp_path / "from-bundle", type)
    theirs = demo_f16 if type == "f16" else export_gguf(DEMO_MODEL, tmp_path / "from-checkpoint", type)
    for part in ("language_model", "mmproj"):
        a, b = (e.output / e.manifest["files"][part] for e in (ours, theirs))
        assert _tensors(a) == _tensors(b), part
        (meta_a, _), (meta_b, _) = fields(a), fields(b)
        # a bundle keeps no bos_token_id (unused: add_bos_token is false), and its own name
        assert {k for k in meta_a.keys() | meta_b.keys() if meta_a.get(k) != meta_b.get(k)} <= \
            {"general.name", "tokenizer.ggml.bos_token_id"}
    src = ours.manifest["source"]
    assert (src["bundle"], src["checkpoint_fingerprint"]) == ("bf16", fingerprint(DEMO_MODEL))
    assert _but_source(ours.manifest) == _but_source(theirs.manifest)


def _but_source(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("source", "files")}  # files: named after the source
