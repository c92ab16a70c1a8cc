"""Greedy decoding from `inputs_embeds` with a KV cache, batched with left padding.

Each row is [image embeddings; prompt token embeddings]. Rows are left-padded to a common
length with the pad token's embedding and masked; transformers' `generate` derives position ids
from the attention mask (cumsum - 1), so a row's positions do not depend on its batch-mates.
A row ends at one of the end-of-generation ids (kept in its ids, as `generate` returns them),
at the token budget, or, in the default mode, once its text contains `<Overall>`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

OVERALL_MARK = "<Overall>"


@dataclass
class Generated:
    ids: list[list[int]]  # new token ids per row, up to and including its end-of-generation id
    texts: list[str]
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


def decode(tokenizer, ids: list[int]) -> str:
    """Text of ids, special tokens kept; ids past the tokenizer (padded embedding rows) have no text."""
    return tokenizer.decode([t for t in ids if t < len(tokenizer)], skip_special_tokens=False)


def new_text(tokenizer, ids: list[int], eos_ids: tuple[int, ...], output_all: bool) -> str:
    """The text of a row's new ids: up to its end-of-generation id, cut after `<Overall>` unless output_all."""
    end = next((i for i, t in enumerate(ids) if t in eos_ids), len(ids))
    text = decode(tokenizer, ids[:end])
    return text if output_all else cut_at_mark(text)


@torch.inference_mode()
def greedy_generate(llm, tokenizer, rows: list[torch.Tensor], *, eos_ids: tuple[int, ...], pad_token_id: int,
                    max_new_tokens: int, output_all: bool) -> Generated:
    """Greedy-decode each row (embeddings [L_i, H]); returns the new ids and text per row."""
    pad_embedding = llm.get_input_embeddings()(torch.tensor([pad_token_id], device=rows[0].device))[0]
    embeds, mask = left_pad(rows, pad_embedding.to(rows[0].dtype))
    gen_cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                               eos_token_id=list(eos_ids) or None, pad_token_id=pad_token_id, use_cache=True,
                               stop_strings=None if output_all else [OVERALL_MARK])
    start = time.perf_counter()
    out = llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=gen_cfg,
                       tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    ids = [finished(tokenizer, seq, eos_ids, output_all) for seq in out.tolist()]
    return Generated(ids, [new_text(tokenizer, r, eos_ids, output_all) for r in ids], seconds)


def finished(tokenizer, seq: list[int], eos_ids: tuple[int, ...], output_all: bool) -> list[int]:
    """A row's ids up to where it ended (its end-of-generation id, or the token that completed
    `<Overall>`); what follows is padding from its batch-mates' longer runs."""
    end = next((i + 1 for i, t in enumerate(seq) if t in eos_ids), len(seq))
    if output_all or OVERALL_MARK not in decode(tokenizer, seq[:end]):
        return seq[:end]
    lo, hi = 1, end  # the shortest prefix whose text holds the mark
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if OVERALL_MARK in decode(tokenizer, seq[:mid]) else (mid + 1, hi)
    return seq[:lo]
