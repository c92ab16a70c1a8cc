"""AITQE checkpoint configuration: read `config.json` of the released layout into typed parts.

The released `config.json` (``model_type: "mm"``) holds the Qwen2 fields at top level plus the
multimodal fields. A missing Qwen2 field takes the default of the original's config class
(`MMCONFIG_DEFAULTS`); the strict weight loader then refuses a shape that does not match.
`rope_scaling` is refused: the original's Qwen2 (transformers 4.41) never applied it.

End of generation is resolved as the original's `generate` does it (`resolve_eos`).
The SigLIP vision config is read from `vision_model_name_or_path` when it can be read offline
(a local folder, absolute or relative to the checkpoint, or the Hugging Face cache), else the
so400m-patch14-384 values are used and later checked against the weights' shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import Qwen2Config, SiglipVisionConfig

from runtime.errors import InputError
from runtime.files import read_json_object
from runtime.image import ImageSpec
from runtime.model.sizes import check_llm_values, check_vision_values

# The original's MMConfig.__init__ defaults (modeling_mm.py), used where config.json lacks a key.
MMCONFIG_DEFAULTS = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu",
    "max_position_embeddings": 4096, "initializer_range": 0.02, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False, "rope_theta": 10000.0, "attention_dropout": 0.0,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
}
QWEN2_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range",
                "rms_norm_eps", "tie_word_embeddings", "rope_theta", "attention_dropout")
# Generation settings that would change what greedy decoding picks, at their neutral values: the
# original's `generate` applies them from its generation config; this runtime decodes plain greedy.
GREEDY_NEUTRAL = {
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None, "force_words_ids": None, "min_length": 0, "min_new_tokens": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "penalty_alpha": None, "stop_strings": None, "max_time": None,
}
# transformers 4.41's defaults of the generation parameters a model config may hold
# (PretrainedConfig._get_generation_defaults): a config.json that departs from one of them makes
# 4.41 rebuild an unedited generation config from the model config.
LEGACY_GENERATION_DEFAULTS = {
    "max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
    "num_beam_groups": 1, "diversity_penalty": 0.0, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
    "typical_p": 1.0, "repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "num_return_sequences": 1,
    "output_scores": False, "return_dict_in_generate": False, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "remove_invalid_values": False, "exponential_decay_length_penalty": None,
    "suppress_tokens": None, "begin_suppress_tokens": None,
}
# AITQE's backbone, Qwen2-7B (its config.json), for benchmarks of the real shapes.
QWEN2_7B = {
    "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
    "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
}
SO400M_VISION = {
    "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
    "num_attention_heads": 16, "image_size": 384, "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
}


@dataclass(frozen=True)
class Eos:
    """The token ids that end generation, and the file they came from."""

    ids: tuple[int, ...]
    source: str


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
    eos: Eos
    pad_token_id: int
    note: str | None = None  # the demo model's: it is not AITQE


def _read_json(path: Path) -> dict:
    return read_json_object(path, "restore it from the checkpoint")


def _llm_config(raw: dict, path: Path) -> Qwen2Config:
    if raw.get("rope_scaling") is not None:
        raise InputError(f"{path}: rope_scaling {raw['rope_scaling']} is set, but the original AITQE code "
                         "(transformers 4.41's Qwen2) never applies it; set it to null to score as the original does")
    fields = {k: raw.get(k, MMCONFIG_DEFAULTS[k]) for k in QWEN2_FIELDS}
    fields["use_sliding_window"] = raw.get("use_sliding_window", False)  # absent from MMConfig: off
    for k in ("sliding_window", "max_window_layers"):
        if k in raw:
            fields[k] = raw[k]
    check_llm_values(fields, path)
    try:
        return Qwen2Config(**fields)
    except Exception as e:  # transformers' config classes raise several kinds
        raise InputError(f"{path}: unusable language-model config ({' '.join(str(e).split())[:200]}); "
                         "fix config.json") from None


def token_id(value, name: str, vocab: int, where) -> int:
    """`value` as a token id of a `vocab`-sized vocabulary, or a one-line InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab:
        raise InputError(f"{where}: {name} {value!r} is not a token id of the {vocab}-token vocabulary; fix the file")
    return value


def _eos_ids(value, vocab: int, where) -> tuple[int, ...]:
    ids = [] if value is None else value if isinstance(value, list) else [value]
    return tuple(token_id(i, "eos_token_id", vocab, where) for i in ids)


def resolve_eos(root: Path, raw: dict) -> Eos:
    """End of generation as the original's `generate` (transformers 4.41) resolves it: from
    generation_config.json when the folder has one, else from config.json's `eos_token_id` (the
    MMConfig default 2 when absent). A generation_config.json derived from the model config and
    never edited (`_from_model_config`) yields to config.json when config.json sets a generation
    parameter of its own, as 4.41's legacy rule does. Refuses settings that would change greedy
    decoding (`GREEDY_NEUTRAL`), which this runtime does not apply."""
    path = root / "generation_config.json"
    gen = _read_json(path) if path.exists() else None
    from_model = gen is None or (gen.get("_from_model_config") and any(
        k in raw and raw[k] != v for k, v in LEGACY_GENERATION_DEFAULTS.items()))
    settings, where = (raw, root / "config.json") if from_model else (gen, path)
    for key, neutral in GREEDY_NEUTRAL.items():
        if settings.get(key, neutral) != neutral:
            raise InputError(f"{where}: {key}={settings[key]!r} would change greedy decoding, which the original "
                             "applies and aitqe-edge does not; remove it to score with plain greedy decoding")
    vocab = raw.get("vocab_size", MMCONFIG_DEFAULTS["vocab_size"])
    vocab = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else 0
    if from_model:
        return Eos(_eos_ids(raw.get("eos_token_id", MMCONFIG_DEFAULTS["eos_token_id"]), vocab, where),
                   "config.json" if "eos_token_id" in raw else "MMConfig default (config.json has no eos_token_id)")
    return Eos(_eos_ids(gen.get("eos_token_id"), vocab, where), "generation_config.json")


def _vision_folder(name: str, root: Path) -> Path | None:
    """A local folder holding the SigLIP config, found without network."""
    for cand in (Path(name).expanduser(), root / name):
        if (cand / "config.json").exists():
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
        check_vision_values(vis, root / "config.json")
        return SiglipVisionConfig(**vis), ImageSpec(size=vis["image_size"]), "so400m defaults"
    cfg = _read_json(folder / "config.json")
    vis = cfg.get("vision_config", cfg)  # a full SiglipConfig nests the vision part
    if not isinstance(vis, dict):
        raise InputError(f"{folder / 'config.json'}: vision_config is not an object; restore the file")
    keep = {k: v for k, v in vis.items() if k in SiglipVisionConfig().to_dict() and k != "model_type"}
    check_vision_values({**SiglipVisionConfig().to_dict(), **keep}, folder / "config.json")
    try:
        vision = SiglipVisionConfig(**keep)
    except Exception as e:  # transformers' config classes raise several kinds
        raise InputError(f"{folder / 'config.json'}: unusable vision config ({' '.join(str(e).split())[:200]}); "
                         "restore the file") from None
    proc = folder / "preprocessor_config.json"
    if not proc.exists():
        return vision, ImageSpec(size=vision.image_size), str(folder)
    spec = ImageSpec.from_processor_config(_read_json(proc))
    if spec.size != vision.image_size:
        raise InputError(f"{proc}: image size {spec.size} differs from the vision config's image_size "
                         f"{vision.image_size}; the tower needs its own size, fix one of the two files")
    return vision, spec, str(folder)


def _demo_note(raw: dict) -> str | None:
    demo = raw.get("aitqe_edge_demo")
    note = demo.get("note") if isinstance(demo, dict) else None
    return note if isinstance(note, str) else None


def load_config(root: str | Path) -> AITQEConfig:
    """Read `root/config.json` of an AITQE checkpoint; one-line InputError on anything unusable."""
    root = Path(root)
    path = root / "config.json"
    if not path.exists():
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
    return AITQEConfig(
        root=root, raw=raw, llm=llm, vision=vision, image=spec, vision_config_source=source,
        image_tokens=tokens, eos=resolve_eos(root, raw),
        pad_token_id=token_id(raw.get("pad_token_id", MMCONFIG_DEFAULTS["pad_token_id"]), "pad_token_id",
                              llm.vocab_size, path),
        note=_demo_note(raw),
    )
