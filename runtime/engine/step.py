"""The fast engine's forward pass: a Qwen2 causal LM over a static KV cache with one position per slot.

Written by hand because transformers' forward keeps one position for the whole batch in its
static cache, while continuous batching needs every slot at its own position; the modules
themselves (projections, norms, MLP, rotary embedding, lm_head) are the model's own, so quantized
linear layers (GPTQ, bitsandbytes) run their own kernels here. The math is transformers' Qwen2:
attention is `scaled_dot_product_attention` with the rotary embedding `apply_rotary_pos_emb`.

Shapes: the cache holds keys and values [layers, slots, kv_heads, max_len, head_dim] in the
model's dtype, allocated once. `prefill` fills slots from embedding rows; `forward` advances
slots [0, n) by one token each, every slot at its own position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb


class StaticKV(nn.Module):
    """Keys and values of `slots` sequences of up to `max_len` positions (buffers: a compiled step
    may update them in place)."""

    def __init__(self, layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        super().__init__()
        shape = (layers, slots, kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @staticmethod
    def bytes_per_slot(layers: int, kv_heads: int, max_len: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * layers * kv_heads * max_len * head_dim * torch.finfo(dtype).bits // 8


class Step(nn.Module):
    """One forward over a slotted static cache, for a Qwen2ForCausalLM (dense or quantized)."""

    def __init__(self, llm: nn.Module, cache: StaticKV):
        super().__init__()
        cfg = llm.config
        self.llm, self.cache = llm, cache
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    def _attention(self, i: int, layer: nn.Module, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   write, keys_values, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        attn = layer.self_attn
        b, t, _ = h.shape
        q = attn.q_proj(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        write(i, k, v)
        k_all, v_all = keys_values(i, k, v)
        out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, is_causal=causal,
                                             enable_gqa=self.heads != self.kv_heads)
        return attn.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))

    def _layers(self, x: torch.Tensor, positions: torch.Tensor, write, keys_values,
                mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        model = self.llm.model
        cos, sin = model.rotary_emb(x, positions)
        for i, layer in enumerate(model.layers):
            x = x + self._attention(i, layer, layer.input_layernorm(x), cos, sin, write, keys_values, mask, causal)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return model.norm(x)

    def prefill(self, rows: list[torch.Tensor], slots: list[int]) -> torch.Tensor:
        """Fill slots[i] with rows[i] [L_i, H] (positions 0..L_i-1), all in one forward, rows padded on
        the right (a causal row never sees its padding); the logits [n, V] of each row's last position.
        A slot's positions past its row hold padding until decoding writes them, always before reading."""
        n, longest = len(rows), max(r.shape[0] for r in rows)
        x = rows[0].new_zeros(n, longest, rows[0].shape[1])
        for i, r in enumerate(rows):
            x[i, :r.shape[0]] = r
        cache, index = self.cache, torch.tensor(slots, device=x.device)

        def write(i, k, v):
            cache.k[i, index, :, :longest] = k
            cache.v[i, index, :, :longest] = v

        positions = torch.arange(longest, device=x.device).expand(n, -1)
        x = self._layers(x, positions, write, lambda i, k, v: (k, v), None, True)
        last = torch.tensor([r.shape[0] - 1 for r in rows], device=x.device)
        return self.llm.lm_head(x[torch.arange(n, device=x.device), last])

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Slots [0, n) each take one token (ids [n]) at its own position ([n]); logits [n, V].
        The token's key and value are stored at that position, then it attends to positions <= it."""
        n, cache = tokens.shape[0], self.cache
        x = self.llm.model.embed_tokens(tokens)[:, None]
        slots = torch.arange(n, device=tokens.device)
        mask = (torch.arange(cache.k.shape[3], device=tokens.device)[None] <= positions[:, None])[:, None, None]

        def write(i, k, v):
            cache.k[i, slots, :, positions] = k[:, :, 0]
            cache.v[i, slots, :, positions] = v[:, :, 0]

        x = self._layers(x, positions[:, None], write, lambda i, k, v: (cache.k[i, :n], cache.v[i, :n]), mask, False)
        return self.llm.lm_head(x[:, 0])
