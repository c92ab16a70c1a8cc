"""The reference engine: greedy decoding with transformers' `generate` from `inputs_embeds`, KV cache,
batched with left padding, as the original AITQE code decodes (it runs batch 1).

Rows are left-padded to a common length with the pad token's embedding and masked; `generate`
derives position ids from the attention mask (cumsum - 1), so a row's positions do not depend on its
batch-mates. A row ends at one of the end-of-generation ids, at the token budget, or once its text
holds the stop rule's mark (transformers' stop strings, as the original uses).
"""

from __future__ import annotations

import time

import torch
from transformers import GenerationConfig

from runtime.engine import Decoded, StopRule
from runtime.engine.expected import expected_score
from runtime.engine.watch import digit_ids, score_key


def left_pad(rows: list[torch.Tensor], pad_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[L_i, H] rows -> inputs_embeds [B, L, H] and attention_mask [B, L], padding on the left."""
    length = max(r.shape[0] for r in rows)
    embeds = pad_embedding.expand(len(rows), length, -1).clone()
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=embeds.device)
    for i, r in enumerate(rows):
        embeds[i, length - r.shape[0]:] = r
        mask[i, length - r.shape[0]:] = 1
    return embeds, mask


def decode_text(tokenizer, ids: list[int]) -> str:
    """Text of ids as the original decodes it: special tokens dropped; ids past the tokenizer (padded
    embedding rows) have no text."""
    return tokenizer.decode([t for t in ids if t < len(tokenizer)], skip_special_tokens=True)


def row_text(tokenizer, ids: list[int], stop: StopRule) -> str:
    """A finished row's text: up to its end-of-generation id, cut after the mark."""
    end = next((i for i, t in enumerate(ids) if t in stop.eos_ids), len(ids))
    text = decode_text(tokenizer, ids[:end])
    at = text.find(stop.mark) if stop.mark else -1
    return text if at < 0 else text[: at + len(stop.mark)]


def finished(tokenizer, seq: list[int], stop: StopRule) -> list[int]:
    """A row's ids up to where it ended (its end-of-generation id, or the token that completed the
    mark); what follows is padding from its batch-mates' longer runs."""
    end = next((i + 1 for i, t in enumerate(seq) if t in stop.eos_ids), len(seq))
    if not stop.mark or stop.mark not in decode_text(tokenizer, seq[:end]):
        return seq[:end]
    lo, hi = 1, end  # the shortest prefix whose text holds the mark
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if stop.mark in decode_text(tokenizer, seq[:mid]) else (mid + 1, hi)
    return seq[:lo]


class FirstToken:
    """A `generate` streamer that notes when the first new tokens arrive (the end of the prefill)."""

    def __init__(self):
        self.at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if self.at is None and value.numel():  # the first call carries the (empty) prompt ids
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


class ReferenceDecoder:
    """`Decoder` over a transformers causal LM (dense, bitsandbytes or GPTQ backbone)."""

    def __init__(self, llm, tokenizer, pad_token_id: int):
        self.llm, self.tokenizer, self.pad_token_id = llm, tokenizer, pad_token_id

    @torch.inference_mode()
    def decode(self, rows: list[torch.Tensor], stop: StopRule, max_new_tokens: int,
               budgets: list[int] | None = None) -> Decoded:
        budgets = budgets or [max_new_tokens] * len(rows)
        pad = self.llm.get_input_embeddings()(torch.tensor([self.pad_token_id], device=rows[0].device))[0]
        embeds, mask = left_pad(rows, pad.to(rows[0].dtype))
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max(budgets),
                                  eos_token_id=list(stop.eos_ids) or None, pad_token_id=self.pad_token_id,
                                  use_cache=True, stop_strings=[stop.mark] if stop.mark else None,
                                  output_logits=True, return_dict_in_generate=True)
        first = FirstToken()
        start = time.perf_counter()
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config,
                                tokenizer=self.tokenizer, streamer=first)
        seqs = out.sequences.tolist()  # to the host: the work is done
        seconds = time.perf_counter() - start
        ids = [finished(self.tokenizer, seq[:budget], stop) for seq, budget in zip(seqs, budgets)]
        expected = [self._expected(row, r, [step[b] for step in out.logits]) for b, (row, r) in enumerate(zip(rows, ids))]
        return Decoded(ids, [row_text(self.tokenizer, r, stop) for r in ids], seconds, len(seqs[0]),
                       (first.at or start + seconds) - start, expected)

    def _expected(self, row: torch.Tensor, ids: list[int], logits: list[torch.Tensor]) -> dict[str, float]:
        """Each score's probability-weighted value (`engine.expected`), found on the decoded text of
        each prefix; the "1" branch, when not taken, by a forward pass of its own."""
        digits = digit_ids(self.tokenizer)
        if digits is None:
            return {}
        out = {}
        for k, token in enumerate(ids):
            key = score_key(decode_text(self.tokenizer, ids[:k]))
            if key is None or token not in digits:
                continue
            p = torch.softmax(logits[k].float(), -1)[digits].tolist()
            if token == digits[1] and k + 1 < len(logits):
                after_one = logits[k + 1]
            else:
                embed = self.llm.get_input_embeddings()
                tail = embed(torch.tensor(ids[:k] + [digits[1]], device=row.device)).to(row.dtype)
                after_one = self.llm(inputs_embeds=torch.cat([row, tail])[None]).logits[0, -1]
            out[key] = expected_score(p, torch.softmax(after_one.float(), -1)[digits[0]].item())
        return out
