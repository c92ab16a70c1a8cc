"""Write checkpoints in the released AITQE layout: trained (the demo model) or random (fixtures).

The layout is what the release's `save_pretrained` produced (see shared design notes):
config.json with the Qwen2 fields at top level plus the multimodal fields, weights named
`model.*`, `vision_model.vision_model.*` (the full SigLIP, dead last layer and head included),
`mm_projector.{0,2}.*`, `image_newline`, safetensors (optionally sharded with an index) or
`pytorch_model*.bin`, and the tokenizer files. SigLIP's own config and preprocessor config go in
a folder that `vision_model_name_or_path` names (a sub-folder here, since the configs are custom).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer,
                          SiglipVisionConfig, SiglipVisionModel)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from runtime.image import ImageSpec
from runtime.prompt import PROMPT

SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>"]  # besides <|endoftext|>, Qwen2's end of text
BASE_CORPUS = [
    PROMPT.format(caption="a photo of a dog on a beach"),
    '{"Recaption": "", "Overall Score": "5<Overall>", "Overall Explanation": "", '
    '"Text Quality Score": 3, "Text Quality Explanation": "", "Image-Text Matching Score": 2, '
    '"Image-Text Matching Explanation": "", "Object Detail Score": 2, "Object Detail Explanation": "", '
    '"Semantic Understanding Score": 2, "Semantic Understanding Explanation": "", '
    '"Text/Chart Description Score": 2, "Text/Chart Description Explanation": ""}',
    "The caption is vague and does not accurately describe the image or its content.",
    "A man stands in front of a checklist of customer service questions, 0123456789.",
]


def train_tokenizer(texts: list[str], vocab_size: int = 512, extra_tokens: list[str] = ()) -> Qwen2Tokenizer:
    """A byte-level BPE in Qwen2's own form (NFC, Qwen2's split pattern), trained on `texts`.

    Built as transformers' `Qwen2Tokenizer` from the trained vocabulary and merges, so the slow
    tokenizer of older transformers (vocab.json + merges.txt) reads it the same way. Then
    <|endoftext|>, SPECIAL_TOKENS and `extra_tokens` (plain added tokens) follow the BPE ids."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, bos_token=None, padding_side="left")
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tok.add_tokens(list(extra_tokens))
    return tok


def save_tokenizer(tokenizer: Qwen2Tokenizer, folder: Path) -> None:
    """The tokenizer files of the released layout: tokenizer.json (fast) and the slow tokenizer's
    vocab.json + merges.txt, with a tokenizer_config.json that transformers 4.41 reads too."""
    tokenizer.save_pretrained(str(folder))
    tokenizer.backend_tokenizer.model.save(str(folder))  # vocab.json, merges.txt
    added = {t.content: i for i, t in sorted(tokenizer.added_tokens_decoder.items())}
    specials = [t for t in SPECIAL_TOKENS if t in added]
    (folder / "added_tokens.json").write_text(json.dumps(added, indent=2, ensure_ascii=False))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"additional_special_tokens": specials, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token},
        indent=2))
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                                          "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
                                 for i, t in sorted(tokenizer.added_tokens_decoder.items())},
        "additional_special_tokens": specials, "bos_token": None, "clean_up_tokenization_spaces": False,
        "eos_token": tokenizer.eos_token, "errors": "replace", "model_max_length": tokenizer.model_max_length,
        "pad_token": tokenizer.pad_token, "padding_side": "left", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


def aitqe_config(llm: Qwen2Config, vision: SiglipVisionConfig, tokenizer, vision_path: str) -> dict:
    """config.json as the release's MMConfig saves it: Qwen2 fields at top level plus the multimodal ones."""
    tokens = (vision.image_size // vision.patch_size) ** 2
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return {
        "architectures": ["MMForCausalLM"], "model_type": "mm", "torch_dtype": "bfloat16",
        "vocab_size": llm.vocab_size, "hidden_size": llm.hidden_size,
        "intermediate_size": llm.intermediate_size, "num_hidden_layers": llm.num_hidden_layers,
        "num_attention_heads": llm.num_attention_heads,
        "num_key_value_heads": llm.num_key_value_heads, "hidden_act": llm.hidden_act,
        "max_position_embeddings": llm.max_position_embeddings, "rms_norm_eps": llm.rms_norm_eps,
        "rope_theta": llm.rope_parameters["rope_theta"], "rope_scaling": None, "tie_word_embeddings": False,
        "initializer_range": llm.initializer_range, "use_sliding_window": False,
        "sliding_window": llm.max_position_embeddings, "max_window_layers": llm.num_hidden_layers,
        "attention_bias": False, "attention_dropout": 0.0, "pretraining_tp": 1, "use_cache": True,
        "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos,
        "language_model_name_or_path": "Qwen/Qwen2-7B", "vision_model_name_or_path": vision_path,
        "mm_projector_type": "mlp", "image_aspect_ratio": "square",
        "visual_hidden_dim": vision.hidden_size, "pesudo_img_size": vision.image_size,
        "pesudo_patch_size": vision.patch_size, "image_tile_tokens": tokens, "pooling_kernel": 1,
        "image_token_index": -200, "pad_token_index": eos, "eos_token_index": eos,
        "IGNORE_INDEX": -100,
    }


def save_checkpoint(folder: str | Path, *, config: dict, state: dict[str, torch.Tensor], tokenizer,
                    vision: SiglipVisionConfig, image: ImageSpec, shard_bytes: int | None = None,
                    fmt: str = "safetensors") -> Path:
    """Write `state` (checkpoint names) and configs in the released layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    GenerationConfig(bos_token_id=config["bos_token_id"], eos_token_id=config["eos_token_id"],
                     pad_token_id=config["pad_token_id"]).save_pretrained(str(folder))
    save_tokenizer(tokenizer, folder)
    vdir = folder / config["vision_model_name_or_path"]
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "config.json").write_text(vision.to_json_string())
    proc = {"image_processor_type": "SiglipImageProcessor", "do_resize": True, "do_rescale": True,
            "do_normalize": True, "size": {"height": image.size, "width": image.size},
            "crop_size": {"height": image.size, "width": image.size},  # the original's processor reads it
            "resample": image.resample, "rescale_factor": image.rescale,
            "image_mean": list(image.mean), "image_std": list(image.std)}
    (vdir / "preprocessor_config.json").write_text(json.dumps(proc, indent=2))
    shards, current, size = [], {}, 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shard_bytes and current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor.contiguous()
        size += nbytes
    shards.append(current)
    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    names = ([f"{stem}.{ext}"] if len(shards) == 1 else
             [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))])
    for fname, shard in zip(names, shards):
        if fmt == "safetensors":
            save_file(shard, str(folder / fname), metadata={"format": "pt"})
        else:
            torch.save(shard, folder / fname)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {n: f for f, s in zip(names, shards) for n in s}}
        (folder / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2))
    return folder


@dataclass(frozen=True)
class FixtureSpec:
    """Sizes of a random AITQE-layout checkpoint (defaults: tiny, for unit tests)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vocab_pad: int = 64           # LM vocab = tokenizer size rounded up to this (as Qwen2 pads)
    tokenizer_vocab: int = 400
    max_positions: int = 512
    vision_hidden: int = 32
    vision_layers: int = 3
    vision_heads: int = 2
    vision_intermediate: int = 64
    image_size: int = 64
    patch_size: int = 16
    init_std: float = 0.2         # larger than HF's 0.02 so random logits are peaked, not ties


def random_checkpoint(folder: str | Path, spec: FixtureSpec = FixtureSpec(), *, seed: int = 0,
                      dtype: torch.dtype = torch.bfloat16, shard_bytes: int | None = None,
                      fmt: str = "safetensors", corpus: list[str] | None = None) -> Path:
    """A checkpoint with random weights and a real (small, trained) tokenizer."""
    torch.manual_seed(seed)
    tokenizer = train_tokenizer((corpus or []) + BASE_CORPUS, spec.tokenizer_vocab)
    vocab = -(-len(tokenizer) // spec.vocab_pad) * spec.vocab_pad
    llm_cfg = Qwen2Config(vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                          num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                          num_key_value_heads=spec.kv_heads, max_position_embeddings=spec.max_positions,
                          rope_theta=1e6, rms_norm_eps=1e-6, initializer_range=spec.init_std,
                          tie_word_embeddings=False)
    vis_cfg = SiglipVisionConfig(hidden_size=spec.vision_hidden, intermediate_size=spec.vision_intermediate,
                                 num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                                 image_size=spec.image_size, patch_size=spec.patch_size, layer_norm_eps=1e-6,
                                 hidden_act="gelu_pytorch_tanh")
    state = {f"model.{k}": v for k, v in Qwen2ForCausalLM(llm_cfg).state_dict().items()}
    state.update({f"vision_model.vision_model.{k}": v for k, v in SiglipVisionModel(vis_cfg).state_dict().items()})
    gen = torch.Generator().manual_seed(seed)
    h = spec.hidden
    state["mm_projector.0.weight"] = torch.randn(h, spec.vision_hidden, generator=gen) / spec.vision_hidden ** 0.5
    state["mm_projector.0.bias"] = torch.randn(h, generator=gen) * 0.02
    state["mm_projector.2.weight"] = torch.randn(h, h, generator=gen) / h ** 0.5
    state["image_newline"] = torch.randn(h, generator=gen)
    state = {k: v.to(dtype) for k, v in state.items()}
    config = aitqe_config(llm_cfg, vis_cfg, tokenizer, "siglip")
    meta = {"fixture": asdict(spec), "seed": seed}
    config["aitqe_edge_fixture"] = meta
    return save_checkpoint(folder, config=config, state=state, tokenizer=tokenizer, vision=vis_cfg,
                           image=ImageSpec(size=spec.image_size), shard_bytes=shard_bytes, fmt=fmt)
