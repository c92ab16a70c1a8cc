"""AITQE checkpoint configuration: read `config.json` of the released layout into typed parts.

The released `config.json` (``model_type: "mm"``) holds the Qwen2 fields at top level plus the
multimodal fields. Missing Qwen2 hyper-parameters fall back to the wrapper config's LLaMA-style
defaults (`WRAPPER_DEFAULTS`), exactly as the original does; shape fields are required.
The SigLIP vision config is read from `vision_model_name_or_path` when it can be read offline
(a local folder, absolute or relative to the checkpoint, or the Hugging Face cache), else the
so400m-patch14-384 values are used and later checked against the weights' shapes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from transformers import Qwen2Config, SiglipVisionConfig

from runtime.errors import InputError
from runtime.image import ImageSpec

QWEN2_SHAPE_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
)
# Defaults of the original wrapper config (LLaMA-style), used when config.json lacks a field.
WRAPPER_DEFAULTS = {
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "attention_dropout": 0.0,
}
SO400M_VISION = {
    "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
    "num_attention_heads": 16, "image_size": 384, "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
}


@dataclass
class AITQEConfig:
    """What the runtime needs from an AITQE checkpoint folder."""

    root: Path
    raw: dict
    llm: Qwen2Config
    vision: SiglipVisionConfig
    image: ImageSpec
    vision_config_source: str  # where the vision config came from, for messages
    image_tokens: int
    eos_token_id: int | None
    pad_token_id: int | None
    projector_type: str = "mlp"
    extra: dict = field(default_factory=dict)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e}); restore it from the checkpoint") from e


def _llm_config(raw: dict, path: Path) -> Qwen2Config:
    missing = [k for k in QWEN2_SHAPE_FIELDS if k not in raw]
    if missing:
        raise InputError(f"{path}: missing {', '.join(missing)}; this is not an AITQE config.json")
    fields = {k: raw.get(k, v) for k, v in WRAPPER_DEFAULTS.items()}
    for k in QWEN2_SHAPE_FIELDS + ("num_key_value_heads", "use_sliding_window", "sliding_window",
                                   "max_window_layers", "initializer_range"):
        if k in raw:
            fields[k] = raw[k]
    fields.setdefault("num_key_value_heads", fields["num_attention_heads"])
    return Qwen2Config(**fields)


def _vision_folder(name: str, root: Path) -> Path | None:
    """A local folder holding the SigLIP config, found without network."""
    for cand in (Path(name).expanduser(), root / name):
        if (cand / "config.json").is_file():
            return cand
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repo id, no cache: both mean "not found offline"
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def _vision_config(raw: dict, root: Path) -> tuple[SiglipVisionConfig, ImageSpec, str]:
    name = str(raw.get("vision_model_name_or_path") or "")
    folder = _vision_folder(name, root) if name else None
    if folder is None:
        vis = dict(SO400M_VISION, image_size=raw.get("pesudo_img_size", 384),
                   patch_size=raw.get("pesudo_patch_size", 14))
        return SiglipVisionConfig(**vis), ImageSpec(size=vis["image_size"]), "so400m defaults"
    cfg = _read_json(folder / "config.json")
    vis = cfg.get("vision_config", cfg)  # a full SiglipConfig nests the vision part
    keep = {k: v for k, v in vis.items() if k in SiglipVisionConfig().to_dict() and k != "model_type"}
    proc = folder / "preprocessor_config.json"
    spec = ImageSpec.from_processor_config(_read_json(proc) if proc.is_file() else {})
    return SiglipVisionConfig(**keep), spec, str(folder)


def load_config(root: str | Path) -> AITQEConfig:
    """Read `root/config.json` of an AITQE checkpoint; one-line InputError on anything unusable."""
    root = Path(root)
    path = root / "config.json"
    if not path.is_file():
        raise InputError(f"{root}: no config.json; pass an AITQE checkpoint folder or a bundle")
    raw = _read_json(path)
    llm = _llm_config(raw, path)
    vision, spec, source = _vision_config(raw, root)
    if raw.get("mm_projector_type", "mlp") != "mlp":
        raise InputError(f"{path}: mm_projector_type {raw['mm_projector_type']!r} is not supported (only 'mlp')")
    if raw.get("pooling_kernel", 1) not in (1, None):
        raise InputError(f"{path}: pooling_kernel {raw['pooling_kernel']} is not supported (only 1)")
    if raw.get("image_aspect_ratio", "square") != "square":
        raise InputError(f"{path}: image_aspect_ratio {raw['image_aspect_ratio']!r} is not supported (only 'square')")
    tokens = (vision.image_size // vision.patch_size) ** 2
    if raw.get("image_tile_tokens", tokens) != tokens:
        raise InputError(f"{path}: image_tile_tokens {raw['image_tile_tokens']} does not match the vision "
                         f"config ({vision.image_size}px / patch {vision.patch_size} = {tokens} tokens)")
    if spec.size != vision.image_size:
        spec = replace(spec, size=vision.image_size)
    return AITQEConfig(
        root=root, raw=raw, llm=llm, vision=vision, image=spec, vision_config_source=source,
        image_tokens=tokens, eos_token_id=raw.get("eos_token_index"),
        pad_token_id=raw.get("pad_token_index"),
    )
