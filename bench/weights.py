"""What a backbone holds, for the cost figures (`bench.cost`) and the projection: its bytes (all, and
those a decode step reads), what computes its linear layers, their FLOPs per token, and its shape.
"""

from __future__ import annotations

import torch


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds; a wrapper tensor subclass (torchao's Float8Tensor) counts its inner tensors."""
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def weight_bytes(llm) -> tuple[int, int]:
    """Bytes of the backbone's parameters and buffers, and of those read per decode step (all but the
    input embedding table, of which a step reads one row)."""
    tensors = {id(t): t for t in {id(t): t for t in [*llm.parameters(), *llm.buffers()]}.values()}
    total = sum(tensor_bytes(t) for t in tensors.values())
    emb = llm.get_input_embeddings().weight
    return total, total - tensor_bytes(emb)


def linear_kernels(llm) -> list[str]:
    """What computes the backbone's linear layers: the quantized layer classes (GPTQModel's MarlinLinear,
    bitsandbytes' Linear4bit, ...), or Linear[weight type] for torch Linear layers."""
    names = set()
    for name, m in llm.named_modules():
        if not name.startswith("model.layers.") or "Linear" not in type(m).__name__:
            continue
        if type(m) is not torch.nn.Linear:
            names.add(type(m).__name__)
        else:
            w = m.weight
            names.add(f"Linear[{str(w.dtype).removeprefix('torch.') if type(w) is torch.nn.Parameter else type(w).__name__}]")
    return sorted(names)


def linear_flops_per_token(cfg) -> int:
    """2 x the decoder's linear-layer weights (attention projections + MLP), from the config."""
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    per_layer = cfg.hidden_size * (2 * q + 2 * kv) + 3 * cfg.hidden_size * cfg.intermediate_size
    return 2 * per_layer * cfg.num_hidden_layers


def backbone_shape(cfg) -> dict:
    """What the projection (bench.projection) needs of the backbone's config."""
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return {"layers": cfg.num_hidden_layers, "q_dim": cfg.num_attention_heads * head_dim,
            "kv_dim": cfg.num_key_value_heads * head_dim, "hidden": cfg.hidden_size, "vocab": cfg.vocab_size}
