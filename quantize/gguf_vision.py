"""AITQE's vision side as a clip.cpp mmproj GGUF (llama.cpp's `tools/mtmd`).

clip.cpp already runs this shape: projector type `mlp` (Linear, GELU, Linear), SigLIP without a
class token (every patch kept), `clip.vision.feature_layer = [k]` to stop after k encoder layers
before any post-layernorm (k = layers - 1 gives `hidden_states[-2]`), mean/std from the file, and
`clip.use_gelu` for SigLIP's tanh GELU in the encoder. The file holds exactly the k layers the
runtime builds; the last layer, post-layernorm and pooling head are dead weight and not written.
AITQE's second projector Linear has no bias; clip.cpp adds one unconditionally, so a zero bias is
written. A known numeric gap: clip.cpp's projector GELU is the tanh form, AITQE's is exact erf.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from gguf import GGUFWriter

from quantize.gguf_file import Tensor
from runtime.errors import InputError
from runtime.model.checkpoint import Checkpoint

ARCH = "clip"
TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")  # clip.use_gelu: ggml_gelu, the tanh form
QUICK_GELU = ("quick_gelu",)  # clip.cpp's default encoder activation
# Runtime module names (runtime.model.vision.VisionEncoder) -> clip.cpp names (tools/mtmd/clip-impl.h).
NAMES = [
    (r"embeddings\.patch_embedding\.(weight|bias)", r"v.patch_embd.\1"),
    (r"embeddings\.position_embedding\.weight", "v.position_embd.weight"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", r"v.blk.\1.attn_\2.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"v.blk.\1.attn_out.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)", r"v.blk.\1.ln1.\2"),
    (r"encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)", r"v.blk.\1.ln2.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"v.blk.\1.ffn_up.\2"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"v.blk.\1.ffn_down.\2"),
    (r"projector\.(0|2)\.(weight|bias)", r"mm.\1.\2"),
]


def clip_name(name: str) -> str | None:
    for pattern, repl in NAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    return None


def check_vision(ck: Checkpoint) -> None:
    """One-line InputError for a vision setting clip.cpp cannot reproduce."""
    cfg, where = ck.config, f"{ck.config.root / 'config.json'} (vision config from {ck.config.vision_config_source})"
    if cfg.vision.hidden_act not in TANH_GELU + QUICK_GELU:
        raise InputError(f"{where}: vision hidden_act {cfg.vision.hidden_act!r} has no clip.cpp equivalent (tanh or "
                         "quick GELU only); this checkpoint cannot be exported as GGUF")
    if abs(cfg.image.rescale - 1 / 255) > 1e-12:
        raise InputError(f"{where}: image rescale {cfg.image.rescale} is not 1/255, which clip.cpp hard-codes; "
                         "this checkpoint cannot be exported as GGUF")
    if cfg.vision.num_hidden_layers < 2:
        raise InputError(f"{where}: a vision tower of {cfg.vision.num_hidden_layers} layer has no hidden_states[-2] "
                         "layer to export; this checkpoint cannot be exported as GGUF")


def metadata(ck: Checkpoint, name: str, file_type: int) -> Callable[[GGUFWriter], None]:
    vision, image, kept = ck.config.vision, ck.config.image, ck.config.vision.num_hidden_layers - 1

    def add(w: GGUFWriter) -> None:
        w.add_type("mmproj")
        w.add_name(name)
        w.add_file_type(file_type)
        w.add_clip_has_vision_encoder(True)
        w.add_clip_projector_type("mlp")
        w.add_vision_image_size(vision.image_size)
        w.add_vision_patch_size(vision.patch_size)
        w.add_vision_embedding_length(vision.hidden_size)
        w.add_vision_feed_forward_length(vision.intermediate_size)
        w.add_vision_head_count(vision.num_attention_heads)
        w.add_vision_attention_layernorm_eps(float(vision.layer_norm_eps))
        w.add_vision_block_count(kept)
        w.add_array("clip.vision.feature_layer", [kept])  # the residual stream after `kept` layers
        w.add_vision_projection_dim(ck.config.llm.hidden_size)
        w.add_vision_image_mean([float(x) for x in image.mean])
        w.add_vision_image_std([float(x) for x in image.std])
        w.add_vision_use_gelu(vision.hidden_act in TANH_GELU)

    return add


def tensors(ck: Checkpoint, kind) -> list[Tensor]:
    """The tower (its k layers) and the projector under clip.cpp's names, plus the zero `mm.2.bias`."""
    out = []
    for name, value in ck.vision.state_dict().items():
        gguf_name = clip_name(name)
        if gguf_name is None:
            raise InputError(f"{ck.config.root}: vision tensor {name!r} has no clip.cpp name; "
                             "this checkpoint cannot be exported as GGUF")
        out.append(Tensor(gguf_name, value, kind))
    hidden = ck.config.llm.hidden_size
    out.append(Tensor("mm.2.bias", torch.zeros(hidden, dtype=torch.float32), kind))
    return out
