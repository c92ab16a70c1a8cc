"""Write checkpoints in the released AITQE layout (the demo model's training, random fixtures).

The layout is what the release's `save_pretrained` produced, and what its code loads:
config.json with the Qwen2 fields at top level plus the multimodal fields, weights named
`model.*`, `vision_model.vision_model.*` (the full SigLIP, dead last layer and head included),
`mm_projector.{0,2}.*`, `image_newline`, safetensors (optionally sharded with an index) or
`pytorch_model*.bin`, and the tokenizer files. SigLIP's own config and preprocessor config go in
a folder that `vision_model_name_or_path` names (a sub-folder here, since the configs are custom).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GenerationConfig, Qwen2Config, SiglipVisionConfig

from runtime.atomic import atomic_folder
from runtime.image import ImageSpec
from runtime.model.locate import check_replaceable


def save_tokenizer(tokenizer, folder: Path) -> None:
    """The tokenizer files of the released layout: tokenizer.json (fast) and the slow tokenizer's
    vocab.json + merges.txt, with a tokenizer_config.json that transformers 4.41 reads too."""
    tokenizer.save_pretrained(str(folder))
    tokenizer.backend_tokenizer.model.save(str(folder))  # vocab.json, merges.txt
    added = sorted(tokenizer.added_tokens_decoder.items())
    specials = [t.content for _, t in added if t.special and t.content not in (tokenizer.eos_token, tokenizer.pad_token)]
    (folder / "added_tokens.json").write_text(json.dumps({t.content: i for i, t in added}, indent=2, ensure_ascii=False))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"additional_special_tokens": specials, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token},
        indent=2))
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                                          "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
                                 for i, t in added},
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
    """Write `state` (checkpoint names) and configs in the released layout, atomically; a checkpoint
    already at `folder` is replaced, any other non-empty folder refused."""
    folder = Path(folder)
    check_replaceable(folder, "checkpoint", "a checkpoint", force=True)
    with atomic_folder(folder) as tmp:
        _write(tmp, config, state, tokenizer, vision, image, shard_bytes, fmt)
    return folder


def _write(folder: Path, config: dict, state: dict[str, torch.Tensor], tokenizer, vision: SiglipVisionConfig,
           image: ImageSpec, shard_bytes: int | None, fmt: str) -> None:
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
