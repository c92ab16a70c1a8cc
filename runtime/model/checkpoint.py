"""Load an AITQE checkpoint folder (released layout) into its parts, strictly and frugally.

Parts: a `Qwen2ForCausalLM`, the `VisionEncoder` (SigLIP cut at hidden_states[-2] + projector),
the tokenizer and the config. Weights are safetensors (single or sharded with an index) or
`pytorch_model*.bin` read with `weights_only=True` (never unpickling arbitrary objects).
Modules are built on the meta device and every tensor is assigned as it is read, shard by
shard, so RAM never holds two copies of the weights. Loading is strict: a missing, unknown or
mis-shaped tensor is an error, so a silently random tower is impossible.

Checkpoint names (transformers 4.41 wrapper) -> modules here:
  model.*                        -> llm.*
  vision_model.vision_model.*    -> vision.* (the transformers-5 spelling vision_model.* too)
  mm_projector.{0,2}.*           -> vision.projector.{0,2}.*
  image_newline                  -> image_newline (loaded, never inserted)
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import logging as hf_logging
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase, Qwen2ForCausalLM

from runtime.model.config import AITQEConfig, load_config
from runtime.defaults import DTYPE_NAMES
from runtime.errors import InputError
from runtime.files import check_folder_files, check_regular, read_text
from runtime.model.sizes import check_llm_shapes, check_vision_shapes, header_shapes
from runtime.model.vision import VisionEncoder

DTYPES = dict(zip(DTYPE_NAMES, (torch.bfloat16, torch.float16, torch.float32)))


class AITQEModules(nn.Module):
    """Container whose parameter names are the runtime's names."""

    def __init__(self, cfg: AITQEConfig, attn_implementation: str = "sdpa"):
        super().__init__()
        cfg.llm._attn_implementation = attn_implementation
        self.llm = Qwen2ForCausalLM(cfg.llm)
        self.vision = VisionEncoder(cfg.vision, cfg.llm.hidden_size, attn_implementation)
        self.image_newline = nn.Parameter(torch.empty(cfg.llm.hidden_size))


@dataclass
class Checkpoint:
    config: AITQEConfig
    tokenizer: PreTrainedTokenizerBase
    llm: Qwen2ForCausalLM
    vision: VisionEncoder
    image_newline: torch.Tensor


def weight_files(root: Path) -> list[Path]:
    """The checkpoint's weight files, in load order."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (root / index).exists():
            try:
                shards = sorted(set(json.loads(read_text(root / index, str(root / index)))["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
                raise InputError(f"{root / index}: unreadable weight index ({type(e).__name__}); restore it") from None
            bad = [s for s in shards if not isinstance(s, str) or Path(s).is_absolute() or ".." in Path(s).parts]
            if bad:
                raise InputError(f"{root / index}: shard name {bad[0]!r} is not a file of this folder; restore it")
            missing = [s for s in shards if not (root / s).exists()]
            if missing:
                raise InputError(f"{root}: weight shard {missing[0]} listed in {index} is missing; "
                                 "re-download the checkpoint")
            for s in shards:
                check_regular(root / s, f"weight shard {root / s}")
            return [root / s for s in shards]
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        found = sorted(root.glob(pattern))
        if found:
            return found
    raise InputError(f"{root}: no weights (model*.safetensors or pytorch_model*.bin); "
                     "pass a complete AITQE checkpoint folder")


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs, one at a time, from safetensors (mmap) or weights-only .bin files."""
    for path in files:
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt", device="cpu") as f:
                    for name in f.keys():
                        yield name, f.get_tensor(name)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                while state:
                    name, tensor = state.popitem()
                    yield name, tensor
                del state
        except (OSError, RuntimeError, ValueError, SafetensorError, pickle.UnpicklingError) as e:
            raise InputError(f"{path}: cannot read weights ({str(e).splitlines()[0]}); "
                             "the file is corrupt or not a checkpoint") from e


def runtime_name(name: str, vision_layers: int) -> str | None:
    """Map a checkpoint tensor name to the runtime's; None for known dead weights."""
    if name.startswith("model."):
        return "llm." + name[len("model."):]
    if name.startswith("mm_projector."):
        return "vision.projector." + name[len("mm_projector."):]
    if name == "image_newline":
        return name
    for prefix in ("vision_model.vision_model.", "vision_model."):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            dead = (f"encoder.layers.{vision_layers - 1}.", "post_layernorm.", "head.")
            return None if rest.startswith(dead) else "vision." + rest
    raise InputError(f"unexpected tensor {name!r} in checkpoint; this is not an AITQE checkpoint")


def load_tokenizer(root: Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    check_folder_files(root, "tokenizer folder")
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:  # an empty model config: AutoTokenizer would read config.json, whose model_type "mm" it does not know
        tok = AutoTokenizer.from_pretrained(str(root), config=PretrainedConfig(), trust_remote_code=trust_remote_code,
                                            local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"{root}: cannot load the tokenizer ({str(e).splitlines()[0]}); "
                         "the checkpoint folder must hold its tokenizer files") from e
    finally:
        hf_logging.set_verbosity(level)
    tok.padding_side = "left"
    return tok


def check_sizes(cfg: AITQEConfig, shapes: dict[str, tuple], root: Path) -> None:
    """The config's sizes against the weight headers, before anything is built (runtime.model.sizes)."""
    where = root / "config.json"
    llm = "model.model." if any(n.startswith("model.model.") for n in shapes) else "model."
    check_llm_shapes(cfg.llm.to_dict(), shapes, llm, where)
    vision = "vision_model.vision_model." if any(n.startswith("vision_model.vision_model.") for n in shapes) \
        else "vision_model."
    check_vision_shapes(cfg.vision.to_dict(), shapes, vision,
                        f"{where} (vision config from {cfg.vision_config_source})",
                        cut=False)
    projector = shapes.get("mm_projector.0.weight")
    if projector is not None and tuple(projector) != (cfg.llm.hidden_size, cfg.vision.hidden_size):
        raise InputError(f"{where}: hidden_size {cfg.llm.hidden_size} and vision hidden_size {cfg.vision.hidden_size} "
                         f"give mm_projector.0.weight the shape {(cfg.llm.hidden_size, cfg.vision.hidden_size)}, but "
                         f"the weights hold {tuple(projector)}; fix config.json or use the weights that go with it")


def load_checkpoint(root: str | Path, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
                    trust_remote_code: bool = False, attn_implementation: str = "sdpa") -> Checkpoint:
    """Load an AITQE checkpoint folder; raises InputError with a one-line reason if unusable."""
    root = Path(root)
    check_folder_files(root, "checkpoint folder")
    cfg = load_config(root)
    files = weight_files(root)
    check_sizes(cfg, header_shapes(files), root)
    tokenizer = load_tokenizer(root, trust_remote_code)
    with init_empty_weights(include_buffers=False):
        modules = AITQEModules(cfg, attn_implementation)
    expected = dict(modules.named_parameters())
    if cfg.llm.tie_word_embeddings:
        expected.pop("llm.lm_head.weight", None)
    seen: set[str] = set()
    for name, tensor in iter_tensors(files):
        target = runtime_name(name, cfg.vision.num_hidden_layers)
        if target is None:
            continue
        if target not in expected:
            raise InputError(f"unexpected tensor {name!r} in {root}; the config does not match the weights")
        if tuple(tensor.shape) != tuple(expected[target].shape):
            hint = (" (the vision config came from " + cfg.vision_config_source + ")") if target.startswith("vision.") else ""
            raise InputError(f"{name}: shape {tuple(tensor.shape)} does not match the config's "
                             f"{tuple(expected[target].shape)}{hint}")
        set_module_tensor_to_device(modules, target, device, value=tensor, dtype=dtype)
        seen.add(target)
    missing = sorted(set(expected) - seen)
    if missing:
        raise InputError(f"{root}: {len(missing)} weights missing from the checkpoint "
                         f"(first: {missing[0]}); the checkpoint is incomplete")
    if cfg.llm.tie_word_embeddings:
        modules.llm.tie_weights()
    modules.to(device)  # the non-persistent buffers (rotary inv_freq, position ids), kept fp32
    modules.eval()
    return Checkpoint(cfg, tokenizer, modules.llm, modules.vision, modules.image_newline.detach())


def stored_dtype(cfg: AITQEConfig) -> torch.dtype:
    """The dtype config.json says the weights are stored in (`torch_dtype`, or `dtype` in newer
    transformers); bf16, the released dtype, when it says none."""
    name = str(cfg.raw.get("torch_dtype") or cfg.raw.get("dtype") or "bfloat16")
    dtype = getattr(torch, name.removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.bfloat16


def fingerprint(root: str | Path) -> str:
    """sha256 over config.json and every weight file (name and bytes): identifies a checkpoint."""
    root = Path(root)
    h = hashlib.sha256()
    for path in [root / "config.json", *weight_files(root)]:
        h.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return "sha256:" + h.hexdigest()
