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

    def update(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's keys and values k, v [n, kv_heads, t, head_dim] of `slots` ([n]); return
        what those slots' new queries attend to.
        positions None (a prefill): whole rows from position 0; their own keys and values are their
        whole past, returned as given. positions [n] (a step, t == 1, slots [0, n)): one token per slot
        at its own position; the slots' whole cache rows [n, kv_heads, max_len, head_dim] (views: the
        caller masks what lies past each slot's position)."""
        if positions is None:
            self.k[layer, slots, :, :k.shape[2]] = k
            self.v[layer, slots, :, :v.shape[2]] = v
            return k, v
        self.k[layer, slots, :, positions] = k[:, :, 0]
        self.v[layer, slots, :, positions] = v[:, :, 0]
        n = slots.shape[0]
        return self.k[layer, :n], self.v[layer, :n]

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
                   slots: torch.Tensor, positions: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        attn = layer.self_attn
        b, t, _ = h.shape
        q = attn.q_proj(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k_all, v_all = self.cache.update(i, slots, k, v, positions)
        out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, is_causal=positions is None,
                                             enable_gqa=self.heads != self.kv_heads)
        return attn.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))

    def _layers(self, x: torch.Tensor, rope_positions: torch.Tensor, slots: torch.Tensor,
                positions: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        model = self.llm.model
        cos, sin = model.rotary_emb(x, rope_positions)
        for i, layer in enumerate(model.layers):
            x = x + self._attention(i, layer, layer.input_layernorm(x), cos, sin, slots, positions, mask)
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
        index = torch.tensor(slots, device=x.device)
        x = self._layers(x, torch.arange(longest, device=x.device).expand(n, -1), index, None, None)
        last = torch.tensor([r.shape[0] - 1 for r in rows], device=x.device)
        return self.llm.lm_head(x[torch.arange(n, device=x.device), last])

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Slots [0, n) each take one token (ids [n]) at its own position ([n]); logits [n, V].
        The token's key and value are stored at that position, then it attends to positions <= it."""
        n = tokens.shape[0]
        x = self.llm.model.embed_tokens(tokens)[:, None]
        slots = torch.arange(n, device=tokens.device)
        mask = (torch.arange(self.cache.k.shape[3], device=tokens.device)[None] <= positions[:, None])[:, None, None]
        x = self._layers(x, positions[:, None], slots, positions, mask)
        return self.llm.lm_head(x[:, 0])
