"""Greedy decoding on a llama.cpp context, one row or several together (`runtime.engine.llama_cpp`).

`run` is the one decoding loop of `LlamaCppModel`: rows (`Request`s) take the context's parallel
sequences (lanes: seq ids 0..lanes-1; the last sequence is kept for branches), each prefilled on its
own (image embeddings, then its prompt ids), then every running row's next token goes in one
`llama_decode` batch per step (continuous batching: a finished row's lane takes the next row). With
one lane it is the one-row path, step for step. Each row ends after an end-of-generation id (kept),
when its `stop(ids)` is true, or after its token budget, and comes out as a `Generation`; its KV
cache stays until the loop resumes, so a caller may still evaluate branches on it (`branch_logits`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Request:
    image: np.ndarray  # float embeddings [T, H], or uint8 pixels [S, S, 3] for clip.cpp
    ids: Sequence[int]  # the prompt's token ids, after the image
    max_new_tokens: int
    eos_ids: Sequence[int]
    stop: Callable[[list[int]], bool] | None = None
    logits: bool = False  # keep each step's logits
    branch: Callable[[list[int]], int | None] | None = None  # asked after each id: another token to evaluate
    probs: Sequence[int] | None = None  # ids whose full-softmax probabilities to keep at each step


@dataclass
class Generation:
    ids: list[int]  # new ids, up to and including the one that ended it
    logits: np.ndarray | None  # [len(ids), V] float32: row k chose ids[k] (when asked for)
    branches: dict[int, np.ndarray] = field(default_factory=dict)  # k -> logits after the branch token at k
    probs: np.ndarray | None = None  # [len(ids), len(probs ids)] float64: full-softmax probabilities (when asked)
    length: int = 0  # prompt positions (image + prompt ids): new token k sits at position length + k
    prefill_seconds: float = 0.0
    seconds: float = 0.0
    seq: int = 0  # the lane it ran on (its KV cache, for `branch_logits`, until the loop resumes)


@dataclass
class _Lane:
    key: Any
    request: Request
    out: Generation
    start: float
    rows: list = field(default_factory=list)
    kept: list = field(default_factory=list)

    def take(self, logits: np.ndarray, model) -> bool:
        """The row's next id from `logits` [V]; whether the row has ended."""
        r, out = self.request, self.out
        token, k = int(np.argmax(logits)), len(out.ids)  # the first maximum, as torch.argmax
        out.ids.append(token)
        if r.logits:
            self.rows.append(logits)
        if r.probs is not None:
            self.kept.append(softmax_at(logits, r.probs))
        other = r.branch(out.ids) if r.branch else None
        if other is not None:
            out.branches[k] = model.branch_logits(out.length + k, other, out.seq)
        return token in r.eos_ids or bool(r.stop and r.stop(out.ids)) or k + 1 == r.max_new_tokens

    def finish(self, n_vocab: int) -> Generation:
        r, out = self.request, self.out
        if r.logits:
            out.logits = np.stack(self.rows) if self.rows else np.zeros((0, n_vocab), np.float32)
        if r.probs is not None:
            out.probs = np.asarray(self.kept, np.float64).reshape(len(self.kept), len(r.probs))
        out.seconds = time.perf_counter() - self.start
        return out


def run(model, requests: Iterable[tuple[Any, Request]]) -> Iterator[tuple[Any, Generation]]:
    """Greedy-decode each (key, request) on `model`'s lanes; (key, Generation) out as each row ends."""
    waiting, lanes, free = iter(requests), {}, list(range(model.lanes))[::-1]
    model.clear()
    exhausted = False
    while True:
        while free and not exhausted:
            item = next(waiting, None)
            if item is None:
                exhausted = True
                break
            seq = free.pop()
            lane, first = _start(model, item, seq)
            if lane.take(first, model):
                yield lane.key, lane.finish(model.n_vocab)
                model.forget(seq)
                free.append(seq)
            else:
                lanes[seq] = lane
        if not lanes:
            return
        running = sorted(lanes)
        logits = model.step([(s, lanes[s].out.length + len(lanes[s].out.ids) - 1, lanes[s].out.ids[-1])
                             for s in running])
        for s, row in zip(running, logits):
            if lanes[s].take(row, model):
                lane = lanes.pop(s)
                yield lane.key, lane.finish(model.n_vocab)
                model.forget(s)
                free.append(s)


def _start(model, item: tuple[Any, Request], seq: int) -> tuple[_Lane, np.ndarray]:
    """A row's prefill on lane `seq` (its image embeddings, then its prompt ids): its lane, and the
    logits [V] of its first new token."""
    key, r = item
    start = time.perf_counter()
    embeds = np.asarray(r.image)
    if embeds.dtype == np.uint8:
        embeds = model.image_embeddings(embeds)
    length = model.check(embeds, len(r.ids), r.max_new_tokens)
    first = model.prefill(seq, embeds, r.ids)
    lane = _Lane(key, r, Generation([], None, length=length, seq=seq), start)
    lane.out.prefill_seconds = time.perf_counter() - start
    return lane, first


def softmax_at(logits: np.ndarray, ids: Sequence[int]) -> list[float]:
    """The full softmax's probabilities of `ids` (computed in float64)."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max())
    return (e[list(ids)] / e.sum()).tolist()
