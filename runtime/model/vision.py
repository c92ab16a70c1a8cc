"""AITQE's vision side as one module: SigLIP tower cut at `hidden_states[-2]`, then the projector.

pixels [B, 3, S, S] -> embeddings [B, T, H], T = (S / patch)^2, H = LLM hidden size.
The tower keeps the patch embeddings and the first N-1 encoder layers; the last layer, the
post-layernorm and the pooling head of the checkpoint are dead weight at inference and are not
built. Projector ("mlp"): Linear(Dv -> H), exact-erf GELU, Linear(H -> H, bias=False).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import SiglipVisionConfig
from transformers.models.siglip.modeling_siglip import SiglipEncoder, SiglipVisionEmbeddings


def cut_config(vision: SiglipVisionConfig, attn_implementation: str = "sdpa") -> SiglipVisionConfig:
    """The vision config of the tower actually run: one encoder layer fewer."""
    cut = copy.deepcopy(vision)
    cut.num_hidden_layers = vision.num_hidden_layers - 1
    cut._attn_implementation = attn_implementation
    return cut


class VisionEncoder(nn.Module):
    """SigLIP up to its second-to-last layer, fused with AITQE's MLP projector."""

    def __init__(self, vision: SiglipVisionConfig, llm_hidden: int, attn_implementation: str = "sdpa"):
        super().__init__()
        cfg = cut_config(vision, attn_implementation)
        self.embeddings = SiglipVisionEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.projector = nn.Sequential(
            nn.Linear(vision.hidden_size, llm_hidden),
            nn.GELU(),
            nn.Linear(llm_hidden, llm_hidden, bias=False),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.embeddings.patch_embedding.weight.dtype
        hidden = self.embeddings(pixel_values.to(dtype))
        hidden = self.encoder(inputs_embeds=hidden).last_hidden_state
        return self.projector(hidden)
