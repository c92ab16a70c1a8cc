"""Random-weight AITQE variants of published shapes, built on the device: for cost columns only.

Shapes: `full` is AITQE's own (Qwen2-7B + SigLIP so400m-patch14-384, 729 image tokens); `reduced`
keeps the 384-pixel, 729-token image side with a 45 M-parameter backbone (Qwen2-7B's layer types,
fewer and narrower), so the same code runs on a CPU in minutes; `tiny` is for tests. Methods:
- bf16 / fp16: the model as built.
- bnb-int8 / bnb-nf4: every decoder Linear becomes bitsandbytes' Linear8bitLt / Linear4bit, which
  quantize the random weights as they move to the device (bitsandbytes' documented module API).
- gptq-int4: a GPTQ-format folder (the layout GPTQModel writes: qweight/qzeros/scales/g_idx) of
  random codes is written to a temporary folder and loaded by the runtime's own GPTQ loader, so the
  kernel is the one a real bundle gets. Running GPTQ itself on a 7B model would take longer than the
  whole benchmark, and a kernel's cost does not depend on the codes' values.
Random weights make timings and memory valid; accuracy is not (LLM.int8's outlier path, which
depends on real activations, is the one cost that may differ).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig

from runtime.config import SO400M_VISION
from runtime.model import VisionEncoder

SHAPES = {
    "full": {"llm": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                     "num_attention_heads": 28, "num_key_value_heads": 4},
             "vision": SO400M_VISION, "group_size": 128, "text_tokens": 42, "new_tokens": 64},
    "reduced": {"llm": {"vocab_size": 32768, "hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 4,
                        "num_attention_heads": 8, "num_key_value_heads": 2},
                "vision": dict(SO400M_VISION, hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                               num_attention_heads=3),
                "group_size": 128, "text_tokens": 42, "new_tokens": 32},
    "tiny": {"llm": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2},
             "vision": dict(SO400M_VISION, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, image_size=56),
             "group_size": 32, "text_tokens": 8, "new_tokens": 6},
}
METHODS = ("bf16", "fp16", "bnb-int8", "bnb-nf4", "gptq-int4")


@dataclass
class SyntheticModel:
    llm: torch.nn.Module
    vision: torch.nn.Module
    image_size: int
    text_tokens: int
    new_tokens: int
    params: int  # the backbone's parameters before quantization


def llm_config(shape: str) -> Qwen2Config:
    return Qwen2Config(**SHAPES[shape]["llm"], max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                       tie_word_embeddings=False)


def dense(cfg: Qwen2Config, dtype: torch.dtype, device: str) -> Qwen2ForCausalLM:
    with torch.device(device):
        return Qwen2ForCausalLM._from_config(cfg, dtype=dtype).eval()


def to_bnb(model: Qwen2ForCausalLM, method: str, compute_dtype: torch.dtype, device: str) -> None:
    import bitsandbytes as bnb

    for layer in model.model.layers:
        for parent in layer.modules():
            for name, child in list(parent.named_children()):
                if type(child) is not torch.nn.Linear:
                    continue
                args = (child.in_features, child.out_features, child.bias is not None)
                weight = child.weight.data.cpu()  # bitsandbytes quantizes on the move from the CPU
                if method == "bnb-int8":
                    new = bnb.nn.Linear8bitLt(*args, has_fp16_weights=False, threshold=6.0)
                    new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
                else:
                    new = bnb.nn.Linear4bit(*args, compute_dtype=compute_dtype, quant_type="nf4")
                    new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
                if child.bias is not None:
                    new.bias = torch.nn.Parameter(child.bias.data.cpu(), requires_grad=False)
                setattr(parent, name, new.to(device))


def write_gptq_folder(cfg: Qwen2Config, folder: Path, group_size: int, device: str) -> None:
    """A 4-bit symmetric GPTQ checkpoint (GPTQModel's on-disk format) with random codes."""
    quant = {"bits": 4, "group_size": group_size, "desc_act": False, "sym": True, "lm_head": False,
             "quant_method": "gptq", "checkpoint_format": "gptq", "format": "gptq", "pack_dtype": "int32"}
    skeleton = dense(cfg, torch.float16, "meta")
    state, gen = {}, torch.Generator(device).manual_seed(0)
    for name, p in skeleton.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if name.startswith("model.layers.") and name.endswith(".weight") and p.dim() == 2:
            out_f, in_f = p.shape
            state[f"{module}.qweight"] = torch.randint(-2**31, 2**31 - 1, (in_f // 8, out_f), dtype=torch.int32,
                                                       device=device, generator=gen).cpu()
            state[f"{module}.qzeros"] = torch.full((in_f // group_size, out_f // 8), 0x77777777, dtype=torch.int32)
            state[f"{module}.scales"] = torch.full((in_f // group_size, out_f), 2e-3, dtype=torch.float16)
            state[f"{module}.g_idx"] = torch.arange(in_f, dtype=torch.int32) // group_size
        elif name.endswith("norm.weight"):
            state[name] = torch.ones(p.shape, dtype=torch.float16)
        else:
            state[name] = (torch.randn(p.shape, device=device, generator=gen, dtype=torch.float16) * 0.02).cpu()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = cfg.to_dict() | {"architectures": ["Qwen2ForCausalLM"], "torch_dtype": "float16",
                              "quantization_config": quant}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "quantize_config.json").write_text(json.dumps(quant, indent=2))


def build(shape: str, method: str, device: str) -> SyntheticModel:
    if shape not in SHAPES:
        raise ValueError(f"unknown synthetic shape {shape!r}; use one of {', '.join(SHAPES)}")
    if method not in METHODS:
        raise ValueError(f"unknown synthetic method {method!r}; use one of {', '.join(METHODS)}")
    spec, cfg = SHAPES[shape], llm_config(shape)
    torch.manual_seed(0)
    dtype = torch.float16 if method in ("fp16", "gptq-int4") else torch.bfloat16
    if not device.startswith("cuda") and method in ("bf16", "bnb-int8", "bnb-nf4"):
        dtype = torch.float32  # the runtime's CPU compute type for 16-bit parts
    if method == "gptq-int4":
        from runtime.gptq_loader import load_gptq

        with tempfile.TemporaryDirectory(prefix="aitqe-synthetic-gptq-") as tmp:
            write_gptq_folder(cfg, Path(tmp), spec["group_size"], device)
            llm = load_gptq(Path(tmp), device)
    else:
        llm = dense(cfg, dtype, device)
        if method.startswith("bnb-"):
            to_bnb(llm, method, dtype, device)
    vision_dtype = dtype if device.startswith("cuda") else torch.float32
    with torch.device(device):
        vision = VisionEncoder(SiglipVisionConfig(**spec["vision"]), cfg.hidden_size).to(vision_dtype).eval()
    params = sum(p.numel() for p in dense(cfg, dtype, "meta").parameters())
    return SyntheticModel(llm, vision, spec["vision"]["image_size"], spec["text_tokens"], spec["new_tokens"], params)
