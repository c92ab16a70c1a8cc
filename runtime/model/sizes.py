"""Check a config's sizes before any module is built: against sane limits, then against the
shapes in the weight files' headers (safetensors' own header reader; no tensor is loaded).

Without this, `num_hidden_layers: 1000000000` makes the loader build modules until memory runs
out, and `hidden_size: 0` or zero heads end in a ZeroDivisionError deep inside transformers.
Each mismatch is a one-line InputError naming the field. Hand-written because transformers checks
shapes only after it has built the model.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from runtime.errors import InputError

# Far above any released model (Qwen2-72B: 80 layers, hidden 8192, vocab 152064; SigLIP so400m:
# 27 layers, 1152 hidden), far below what would exhaust memory while modules are built.
LIMITS = {
    "vocab_size": 1 << 22, "hidden_size": 1 << 16, "intermediate_size": 1 << 20, "num_hidden_layers": 1024,
    "num_attention_heads": 1024, "num_key_value_heads": 1024, "max_position_embeddings": 1 << 24,
    "head_dim": 4096, "image_size": 2048, "patch_size": 2048, "num_channels": 3,
}
FIX = "fix config.json or use the weights that go with it"


def positive_int(cfg: Mapping, key: str, where: object, *, required: bool = True) -> int | None:
    """cfg[key] as an int in 1..LIMITS[key], or a one-line InputError naming the field."""
    if key not in cfg or cfg[key] is None:
        if required:
            raise InputError(f"{where}: {key} is missing; {FIX}")
        return None
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{where}: {key} {v!r} is not an integer; {FIX}")
    limit = LIMITS.get(key, 1 << 24)
    if not 1 <= v <= limit:
        raise InputError(f"{where}: {key} {v} is out of range (1..{limit:,}); {FIX}")
    return v


def check_llm_values(cfg: Mapping, where: object) -> None:
    """Types, limits and divisibility of a Qwen2 config's sizes (a dict of config.json values)."""
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings"):
        positive_int(cfg, key, where)
    heads = cfg["num_attention_heads"]
    if positive_int(cfg, "head_dim", where, required=False) is None and cfg["hidden_size"] % heads:
        raise InputError(f"{where}: hidden_size {cfg['hidden_size']} is not a multiple of num_attention_heads "
                         f"{heads}; {FIX}")
    for key in ("rms_norm_eps", "rope_theta"):
        v = cfg.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf")):
            raise InputError(f"{where}: {key} {v!r} is not a positive number; {FIX}")


def check_vision_values(cfg: Mapping, where: object) -> None:
    """Types, limits and divisibility of a SigLIP vision config's sizes."""
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size"):
        positive_int(cfg, key, where)
    positive_int(cfg, "num_channels", where, required=False)
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise InputError(f"{where}: vision hidden_size {cfg['hidden_size']} is not a multiple of num_attention_heads "
                         f"{cfg['num_attention_heads']}; {FIX}")
    if cfg["patch_size"] > cfg["image_size"]:
        raise InputError(f"{where}: vision patch_size {cfg['patch_size']} is larger than image_size "
                         f"{cfg['image_size']}; {FIX}")


def header_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from the files' headers only (safetensors; .bin via mmap)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt", device="cpu") as f:
                    for name in f.keys():
                        shapes[name] = tuple(f.get_slice(name).get_shape())
            else:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                shapes.update({k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)})
                del state
        except (OSError, RuntimeError, ValueError, SafetensorError, AttributeError, pickle.UnpicklingError) as e:
            raise InputError(f"{path}: cannot read weights ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             "the file is corrupt or not a checkpoint") from e
    return shapes


def _layers(shapes: Mapping[str, tuple], prefix: str) -> int:
    """How many layers `prefix`N.* the weights hold (highest index + 1)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = [int(m.group(1)) for name in shapes if (m := pattern.match(name))]
    return max(found) + 1 if found else 0


def _expect(shapes: Mapping[str, tuple], name: str, want: tuple, fields: str, where: object) -> None:
    got = shapes.get(name)
    if got is not None and tuple(got) != want:
        raise InputError(f"{where}: {name} of shape {tuple(got)} in the weights does not match the config's "
                         f"{want} (from {fields}); {FIX}")


def check_llm_shapes(cfg: Mapping, shapes: Mapping[str, tuple], prefix: str, where: object, *,
                     projections: bool = True) -> None:
    """The Qwen2 sizes against the weights under `prefix` ("model." in a transformers folder).
    `projections`: also check the attention and MLP matrices (off for packed quantized weights)."""
    check_llm_values(cfg, where)
    layers = _layers(shapes, prefix + "layers.")
    if layers != cfg["num_hidden_layers"]:
        raise InputError(f"{where}: num_hidden_layers {cfg['num_hidden_layers']} does not match the {layers} "
                         f"layers in the weights; {FIX}")
    hidden, vocab = cfg["hidden_size"], cfg["vocab_size"]
    _expect(shapes, prefix + "embed_tokens.weight", (vocab, hidden), "vocab_size and hidden_size", where)
    if projections:
        head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
        layer = f"{prefix}layers.0."
        _expect(shapes, layer + "self_attn.q_proj.weight", (cfg["num_attention_heads"] * head_dim, hidden),
                "num_attention_heads and hidden_size", where)
        _expect(shapes, layer + "self_attn.k_proj.weight", (cfg["num_key_value_heads"] * head_dim, hidden),
                "num_key_value_heads and hidden_size", where)
        _expect(shapes, layer + "mlp.gate_proj.weight", (cfg["intermediate_size"], hidden),
                "intermediate_size and hidden_size", where)
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    if heads % kv:
        raise InputError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}; {FIX}")


def check_vision_shapes(cfg: Mapping, shapes: Mapping[str, tuple], prefix: str, where: object, *,
                        cut: bool) -> None:
    """The SigLIP sizes against the weights under `prefix`; `cut`: the weights hold the tower as run
    (one layer fewer than the config), else the checkpoint's whole tower (the last layer may be absent)."""
    check_vision_values(cfg, where)
    n = cfg["num_hidden_layers"]
    layers = _layers(shapes, prefix + "encoder.layers.")
    allowed = {n - 1} if cut else {n, n - 1}
    if layers not in allowed:
        raise InputError(f"{where}: vision num_hidden_layers {n} does not match the {layers} vision layers "
                         f"in the weights; {FIX}")
    hidden, patch = cfg["hidden_size"], cfg["patch_size"]
    _expect(shapes, prefix + "embeddings.patch_embedding.weight", (hidden, cfg.get("num_channels", 3), patch, patch),
            "vision hidden_size and patch_size", where)
    _expect(shapes, prefix + "embeddings.position_embedding.weight", ((cfg["image_size"] // patch) ** 2, hidden),
            "vision image_size, patch_size and hidden_size", where)
    _expect(shapes, prefix + "encoder.layers.0.mlp.fc1.weight", (cfg["intermediate_size"], hidden),
            "vision intermediate_size and hidden_size", where)
