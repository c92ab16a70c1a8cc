"""Greedy decoding from `inputs_embeds` with a KV cache, batched with left padding.

Each row is [image embeddings; prompt token embeddings]. Rows are left-padded to a common
length with the pad token's embedding and masked; transformers' `generate` derives position ids
from the attention mask (cumsum - 1), so a row's positions do not depend on its batch-mates.
Default mode stops a row once its text contains `<Overall>`; output-all runs to EOS or the limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

OVERALL_MARK = "<Overall>"


@dataclass
class Generated:
    texts: list[str]
    new_tokens: list[int]
    seconds: float


def left_pad(rows: list[torch.Tensor], pad_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[L_i, H] rows -> inputs_embeds [B, L, H] and attention_mask [B, L], padding on the left."""
    length = max(r.shape[0] for r in rows)
    embeds = pad_embedding.expand(len(rows), length, -1).clone()
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=embeds.device)
    for i, r in enumerate(rows):
        embeds[i, length - r.shape[0]:] = r
        mask[i, length - r.shape[0]:] = 1
    return embeds, mask


def cut_at_mark(text: str) -> str:
    """Text up to and including the first `<Overall>`, or the whole text."""
    at = text.find(OVERALL_MARK)
    return text if at < 0 else text[: at + len(OVERALL_MARK)]


@torch.inference_mode()
def greedy_generate(llm, tokenizer, rows: list[torch.Tensor], *, eos_token_id: int | None,
                    pad_token_id: int | None, max_new_tokens: int, output_all: bool) -> Generated:
    """Greedy-decode each row (embeddings [L_i, H]); returns the decoded new text per row."""
    pad = pad_token_id if pad_token_id is not None else eos_token_id
    pad_embedding = llm.get_input_embeddings()(torch.tensor([pad or 0], device=rows[0].device))[0]
    embeds, mask = left_pad(rows, pad_embedding.to(rows[0].dtype))
    gen_cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                               eos_token_id=eos_token_id, pad_token_id=pad, use_cache=True,
                               stop_strings=None if output_all else [OVERALL_MARK])
    start = time.perf_counter()
    out = llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=gen_cfg,
                       tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    texts, counts = [], []
    vocab = len(tokenizer)
    for seq in out.tolist():
        ids = []
        for t in seq:  # stop at the row's EOS; the rest is padding
            if t == eos_token_id:
                break
            ids.append(t)
        counts.append(len(ids) + (len(ids) < len(seq)))
        # ids past the tokenizer (padded embedding rows) have no text
        text = tokenizer.decode([t for t in ids if t < vocab], skip_special_tokens=False)
        texts.append(text if output_all else cut_at_mark(text))
    return Generated(texts, counts, seconds)
