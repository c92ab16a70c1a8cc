"""The reference engine: greedy decoding with transformers' `generate` from `inputs_embeds`, KV cache,
batched with left padding, as the original AITQE code decodes (it runs batch 1).

Rows are left-padded to a common length with the pad token's embedding and masked; `generate`
derives position ids from the attention mask (cumsum - 1), so a row's positions do not depend on its
batch-mates. A row ends at one of the end-of-generation ids, at the token budget, or once its text
holds the stop rule's mark (transformers' stop strings, as the original uses). `stream` runs static
batches of `slots` rows and yields each batch's rows when it ends.

Observers see each row after its batch's `generate`, from its step logits; a branch the row did not
take (or whose next step was not run) is one forward pass of its own over the row's whole prefix.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import torch
from transformers import GenerationConfig

from runtime.engine import Branch, Decoded, Finished, Observe, Row, StopRule, register, replay
from runtime.engine.text import finished, row_text


def left_pad(rows: list[torch.Tensor], pad_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[L_i, H] rows -> inputs_embeds [B, L, H] and attention_mask [B, L], padding on the left."""
    length = max(r.shape[0] for r in rows)
    embeds = pad_embedding.expand(len(rows), length, -1).clone()
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=embeds.device)
    for i, r in enumerate(rows):
        embeds[i, length - r.shape[0]:] = r
        mask[i, length - r.shape[0]:] = 1
    return embeds, mask


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
    """`Decoder` over a transformers causal LM (dense, bitsandbytes or GPTQ backbone), static batches."""

    name = "reference"
    compiled = False

    def __init__(self, llm, tokenizer, pad_token_id: int, slots: int = 8):
        self.llm, self.tokenizer, self.pad_token_id, self.slots = llm, tokenizer, pad_token_id, max(1, slots)

    def set_slots(self, slots: int) -> None:
        self.slots = max(1, slots)

    def stream(self, rows: Iterable[Row], stop: StopRule, observe: Observe | None = None
               ) -> Iterator[tuple[Any, Finished]]:
        waiting = iter(rows)
        while batch := list(islice(waiting, self.slots)):
            keys, embeds, budgets = zip(*batch)
            done, _ = self._batch(list(embeds), stop, list(budgets), observe)
            yield from zip(keys, done)

    def decode(self, rows: list[torch.Tensor], stop: StopRule, max_new_tokens: int,
               budgets: list[int] | None = None, observe: Observe | None = None) -> Decoded:
        done, steps = self._batch(rows, stop, budgets or [max_new_tokens] * len(rows), observe)
        return Decoded.of(done, done[0].start, steps)

    @torch.inference_mode()
    def _batch(self, rows: list[torch.Tensor], stop: StopRule, budgets: list[int],
               observe: Observe | None) -> tuple[list[Finished], int]:
        """One `generate` over rows: each row finished, and the steps the batch ran."""
        pad = self.llm.get_input_embeddings()(torch.tensor([self.pad_token_id], device=rows[0].device))[0]
        embeds, mask = left_pad(rows, pad.to(rows[0].dtype))
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max(budgets),
                                  eos_token_id=list(stop.eos_ids) or None, pad_token_id=self.pad_token_id,
                                  use_cache=True, stop_strings=[stop.mark] if stop.mark else None,
                                  output_logits=observe is not None, return_dict_in_generate=True)
        first = FirstToken()
        start = time.perf_counter()
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config,
                                tokenizer=self.tokenizer, streamer=first)
        seqs = out.sequences.tolist()  # to the host: the work is done
        seconds = time.perf_counter() - start
        prefill = (first.at or start + seconds) - start
        done = []
        for b, (row, seq, budget) in enumerate(zip(rows, seqs, budgets)):
            ids = finished(self.tokenizer, seq[:budget], stop)
            seen = {} if observe is None else self._observe(observe, row, ids, [step[b] for step in out.logits])
            done.append(Finished(ids, row_text(self.tokenizer, ids, stop), seen, start, prefill, seconds))
        return done, len(seqs[0])

    def _observe(self, observe: Observe, row: torch.Tensor, ids: list[int], logits: list[torch.Tensor]) -> dict:
        """A row's observer, fed its ids and the step logits of `generate`."""
        observed = list(observe.ids)

        def probs(step_logits: torch.Tensor) -> list[float]:
            return torch.softmax(step_logits.float(), -1)[observed].tolist()

        def evaluate(branch: Branch) -> list[float]:
            embed = self.llm.get_input_embeddings()
            tail = embed(torch.tensor(ids[:branch.step] + [branch.token], device=row.device)).to(row.dtype)
            return probs(self.llm(inputs_embeds=torch.cat([row, tail])[None]).logits[0, -1])

        return replay(observe(), ids, lambda k: probs(logits[k]), len(logits), evaluate)


register("reference", lambda b: ReferenceDecoder(b.llm, b.tokenizer, b.pad_token_id, b.slots))
