"""Random AITQE checkpoints in the released layout, for tests and synthetic benchmarks.

`random_checkpoint(folder, spec)` writes random weights of any size (`FixtureSpec`; `SHAPES` holds
AITQE's own and smaller ones) with a real small tokenizer, through the same writer as the demo model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

from runtime.demo.train.tokenizer import train_tokenizer
from runtime.image import ImageSpec
from runtime.model.config import QWEN2_7B as _QWEN2_7B, SO400M_VISION
from runtime.model.writer import aitqe_config, save_checkpoint
from runtime.prompt import PROMPT

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


@dataclass(frozen=True)
class FixtureSpec:
    """Sizes of a random AITQE-layout checkpoint (defaults: tiny, for unit tests)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vocab_pad: int = 1            # LM vocab = tokenizer size rounded up to this (Qwen2-7B pads to 152064)
    tokenizer_vocab: int = 400
    max_positions: int = 512
    vision_hidden: int = 32
    vision_layers: int = 3
    vision_heads: int = 2
    vision_intermediate: int = 64
    image_size: int = 64
    patch_size: int = 16
    init_std: float = 0.2         # larger than HF's 0.02 so random logits are peaked, not ties


QWEN2_7B = dict(hidden=_QWEN2_7B["hidden_size"], layers=_QWEN2_7B["num_hidden_layers"],
                heads=_QWEN2_7B["num_attention_heads"], kv_heads=_QWEN2_7B["num_key_value_heads"],
                intermediate=_QWEN2_7B["intermediate_size"], vocab_pad=_QWEN2_7B["vocab_size"],
                max_positions=_QWEN2_7B["max_position_embeddings"], init_std=0.02)
SO400M_384 = dict(vision_hidden=SO400M_VISION["hidden_size"], vision_layers=SO400M_VISION["num_hidden_layers"],
                  vision_heads=SO400M_VISION["num_attention_heads"], vision_intermediate=SO400M_VISION["intermediate_size"],
                  image_size=SO400M_VISION["image_size"], patch_size=SO400M_VISION["patch_size"])
SHAPES = {
    "full": FixtureSpec(**QWEN2_7B, **SO400M_384),  # AITQE: Qwen2-7B + SigLIP so400m-patch14-384
    # the same 729-token image side with a 45 M-parameter backbone of Qwen2-7B's layer types, for CPUs
    "reduced": FixtureSpec(hidden=512, layers=4, heads=8, kv_heads=2, intermediate=1408, vocab_pad=32768,
                           max_positions=4096, init_std=0.02, **{**SO400M_384, "vision_hidden": 192,
                                                                "vision_layers": 4, "vision_heads": 3,
                                                                "vision_intermediate": 768}),
    "tiny": FixtureSpec(),
}


def configs(spec: FixtureSpec, vocab: int) -> tuple[Qwen2Config, SiglipVisionConfig]:
    llm = Qwen2Config(vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                      num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                      num_key_value_heads=spec.kv_heads, max_position_embeddings=spec.max_positions,
                      rope_theta=1e6, rms_norm_eps=1e-6, initializer_range=spec.init_std, tie_word_embeddings=False)
    vision = SiglipVisionConfig(hidden_size=spec.vision_hidden, intermediate_size=spec.vision_intermediate,
                                num_hidden_layers=spec.vision_layers, num_attention_heads=spec.vision_heads,
                                image_size=spec.image_size, patch_size=spec.patch_size, layer_norm_eps=1e-6,
                                hidden_act="gelu_pytorch_tanh")
    return llm, vision


def draw(name: str, shape, std: float, gen: torch.Generator, device: str) -> torch.Tensor:
    """One random tensor: norm weights 1, biases 0, projector weights scaled by fan-in, the rest N(0, std)."""
    if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
        return torch.ones(shape, device=device)
    if name.endswith(".bias"):
        return torch.zeros(shape, device=device)
    scale = shape[-1] ** -0.5 if name.startswith("mm_projector.") else 1.0 if name == "image_newline" else std
    return torch.randn(shape, device=device, generator=gen) * scale


def random_state(llm: Qwen2Config, vision: SiglipVisionConfig, std: float, seed: int, dtype: torch.dtype,
                 device: str) -> dict[str, torch.Tensor]:
    """Checkpoint-named random tensors of the modules' shapes, drawn on `device` without building the
    modules (a 7B model is drawn on a GPU in seconds)."""
    with torch.device("meta"):
        shapes = {f"model.{k}": v.shape for k, v in Qwen2ForCausalLM(llm).state_dict().items()}
        shapes.update({f"vision_model.vision_model.{k}": v.shape for k, v in SiglipVisionModel(vision).state_dict().items()})
    h = llm.hidden_size
    shapes.update({"mm_projector.0.weight": (h, vision.hidden_size), "mm_projector.0.bias": (h,),
                   "mm_projector.2.weight": (h, h), "image_newline": (h,)})
    gen = torch.Generator(device).manual_seed(seed)
    return {name: draw(name, shape, std, gen, device).to(dtype).cpu() for name, shape in shapes.items()}


def random_checkpoint(folder: str | Path, spec: FixtureSpec = FixtureSpec(), *, seed: int = 0,
                      dtype: torch.dtype = torch.bfloat16, shard_bytes: int | None = None,
                      fmt: str = "safetensors", corpus: list[str] | None = None, eos: bool = True,
                      device: str = "cpu") -> Path:
    """A checkpoint with random weights and a real (small, trained) tokenizer. Without `eos`, its
    generation config names no end-of-generation id, so decoding always runs to the token budget."""
    tokenizer = train_tokenizer((corpus or []) + BASE_CORPUS, spec.tokenizer_vocab)
    vocab = -(-len(tokenizer) // spec.vocab_pad) * spec.vocab_pad
    llm_cfg, vis_cfg = configs(spec, vocab)
    state = random_state(llm_cfg, vis_cfg, spec.init_std, seed, dtype, device)
    config = aitqe_config(llm_cfg, vis_cfg, tokenizer, "siglip")
    config["aitqe_edge_fixture"] = {"fixture": asdict(spec), "seed": seed}
    folder = save_checkpoint(folder, config=config, state=state, tokenizer=tokenizer, vision=vis_cfg,
                             image=ImageSpec(size=spec.image_size), shard_bytes=shard_bytes, fmt=fmt)
    if not eos:
        (folder / "generation_config.json").write_text("{}")
    return folder
