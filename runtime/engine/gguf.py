"""The llama.cpp engine (`llama.cpp`): a `Decoder` over a GGUF export's `LlamaCppModel`.

Its rows are `Prompted` (image embeddings, then the prompt's own token ids: a GGUF model is fed our
ids, never its own tokenizer's); a row of plain embeddings is refused. `slots` rows decode together
on llama.cpp's parallel sequences (`LlamaCppModel.set_lanes`; continuous batching, one
`llama_decode` per step for all running rows: `runtime.engine.llama_lanes`); with 1 slot, one row at
a time. Greedy decoding with the stop rule's end-of-generation ids and mark (watched on token ids,
`runtime.engine.text.Watcher`), each step's observed probabilities kept, and an observer's branches
evaluated as the row ends on a copy of its KV cache. It runs only GGUF exports: over a torch
backbone its factory raises `Unsupported` (`runtime.scorer` builds it for a GGUF export,
`runtime.gguf_scorer`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from runtime.engine import (Backbone, Branch, Decoded, Finished, Observe, Prompted, Row, StopRule, Unsupported,
                            register, replay)
from runtime.engine.llama_cpp import MAX_LANES, LlamaCppModel, Request, softmax_at
from runtime.engine.text import Pieces, Watcher, row_text

NAME = "llama.cpp"


class LlamaCppDecoder:
    """`Decoder` over a loaded GGUF export, `slots` rows together."""

    name = NAME
    compiled = False
    compiles = 0

    def __init__(self, model: LlamaCppModel, tokenizer, slots: int = 1):
        self.model, self.tokenizer, self.pieces = model, tokenizer, Pieces(tokenizer)
        self.set_slots(slots)

    def set_slots(self, slots: int) -> None:
        """Decode `slots` rows together on as many llama.cpp sequences (the context is remade for as many
        as a call can use: `decode` of fewer rows, a single pair, keeps a smaller one)."""
        self.slots = max(1, min(slots, MAX_LANES))

    def stream(self, rows: Iterable[Row], stop: StopRule, observe: Observe | None = None
               ) -> Iterator[tuple[Any, Finished]]:
        return self._run(rows, stop, observe, self.slots)

    def _run(self, rows: Iterable[Row], stop: StopRule, observe: Observe | None, lanes: int
             ) -> Iterator[tuple[Any, Finished]]:
        self.model.set_lanes(lanes)
        starts: dict[Any, float] = {}

        def requests() -> Iterator[tuple[Any, Request]]:
            for key, row, budget in rows:
                if not isinstance(row, Prompted):
                    raise TypeError("the llama.cpp engine takes Prompted rows (image embeddings and prompt ids)")
                watch = Watcher(self.pieces, stop.mark)
                image = (row.image.float().numpy() if isinstance(row.image, torch.Tensor)
                         else np.asarray(row.image, np.float32))
                starts[key] = time.perf_counter()
                yield key, Request(image, row.ids, budget, stop.eos_ids,
                                   stop=(lambda ids, w=watch: w.add(ids[-1])) if stop.mark else None,
                                   probs=None if observe is None else observe.ids)

        for key, g in self.model.generate_many(requests()):
            seen = {}
            if observe is not None:  # while the row's KV cache is still there
                def evaluate(b: Branch, g=g) -> list[float]:
                    return softmax_at(self.model.branch_logits(g.length + b.step, b.token, g.seq), observe.ids)

                seen = replay(observe(), g.ids, lambda k, g=g: g.probs[k].tolist(), len(g.ids), evaluate)
            start = starts.pop(key)
            yield key, Finished(g.ids, row_text(self.tokenizer, g.ids, stop), seen, start, g.prefill_seconds,
                                time.perf_counter() - start)

    def decode(self, rows: list[Prompted], stop: StopRule, max_new_tokens: int,
               budgets: list[int] | None = None, observe: Observe | None = None) -> Decoded:
        start = time.perf_counter()
        budgets = budgets or [max_new_tokens] * len(rows)
        done = dict(self._run(((i, r, b) for i, (r, b) in enumerate(zip(rows, budgets))), stop, observe,
                              min(self.slots, len(rows))))
        return Decoded.of([done[i] for i in range(len(rows))], start, max(len(f.ids) for f in done.values()))


def _refuse(backbone: Backbone) -> LlamaCppDecoder:
    raise Unsupported("the llama.cpp engine runs GGUF exports only (python -m quantize.export --format gguf); "
                      "pass --model with such an export")


register(NAME, _refuse)
