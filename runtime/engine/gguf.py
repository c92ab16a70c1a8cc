"""The llama.cpp engine (`llama.cpp`): a `Decoder` over a GGUF export's `LlamaCppModel`.

Its rows are `Prompted` (image embeddings, then the prompt's own token ids: a GGUF model is fed our
ids, never its own tokenizer's); a row of plain embeddings is refused. Rows go one at a time
(`slots` is 1): greedy decoding with the stop rule's end-of-generation ids and mark (watched on
token ids, `runtime.engine.text.Watcher`), each step's observed probabilities kept, and an
observer's branches evaluated after the row on a copy of its KV cache. It runs only GGUF exports:
over a torch backbone its factory raises `Unsupported` (`runtime.scorer` builds it for a GGUF
export, `runtime.gguf_scorer`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from runtime.engine import (Backbone, Branch, Decoded, Finished, Observe, Prompted, Row, StopRule, Unsupported,
                            register, replay)
from runtime.engine.llama_cpp import LlamaCppModel, softmax_at
from runtime.engine.text import Pieces, Watcher, row_text

NAME = "llama.cpp"


class LlamaCppDecoder:
    """`Decoder` over a loaded GGUF export, one row at a time."""

    name = NAME
    compiled = False
    compiles = 0
    slots = 1

    def __init__(self, model: LlamaCppModel, tokenizer):
        self.model, self.tokenizer, self.pieces = model, tokenizer, Pieces(tokenizer)

    def set_slots(self, slots: int) -> None:
        """Rows run one at a time on llama.cpp's one context; `slots` is kept at 1."""

    def stream(self, rows: Iterable[Row], stop: StopRule, observe: Observe | None = None
               ) -> Iterator[tuple[Any, Finished]]:
        for key, row, budget in rows:
            yield key, self.one(row, stop, budget, observe)

    def decode(self, rows: list[Prompted], stop: StopRule, max_new_tokens: int,
               budgets: list[int] | None = None, observe: Observe | None = None) -> Decoded:
        start = time.perf_counter()
        done = [self.one(r, stop, b, observe) for r, b in zip(rows, budgets or [max_new_tokens] * len(rows))]
        return Decoded.of(done, start, max(len(f.ids) for f in done))

    def one(self, row: Prompted, stop: StopRule, budget: int, observe: Observe | None) -> Finished:
        """One row, greedy, to its end-of-generation id, its mark or its budget."""
        if not isinstance(row, Prompted):
            raise TypeError("the llama.cpp engine takes Prompted rows (image embeddings and prompt ids)")
        watch = Watcher(self.pieces, stop.mark)
        image = row.image.float().numpy() if isinstance(row.image, torch.Tensor) else np.asarray(row.image, np.float32)
        start = time.perf_counter()
        g = self.model.generate(image, row.ids, budget, stop.eos_ids,
                                stop=(lambda ids: watch.add(ids[-1])) if stop.mark else None,
                                probs=None if observe is None else observe.ids)
        seen = {}
        if observe is not None:
            def evaluate(b: Branch) -> list[float]:
                return softmax_at(self.model.branch_logits(g.length + b.step, b.token), observe.ids)

            seen = replay(observe(), g.ids, lambda k: g.probs[k].tolist(), len(g.ids), evaluate)
        return Finished(g.ids, row_text(self.tokenizer, g.ids, stop), seen, start, g.prefill_seconds,
                        time.perf_counter() - start)


def _refuse(backbone: Backbone) -> LlamaCppDecoder:
    raise Unsupported("the llama.cpp engine runs GGUF exports only (python -m quantize.export --format gguf); "
                      "pass --model with such an export")


register(NAME, _refuse)
