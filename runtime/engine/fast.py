"""The fast engine: static KV cache, one compiled decode step, continuous batching.

Rows (embedding rows [L, H]) wait in their input order; each free slot of the static cache takes
the next one (one prefill), and every step advances all busy slots by one token. A row leaves its
slot as soon as it ends (an end-of-generation id, the stop mark seen on token ids, or its token
budget) and the slot takes the next waiting row, so the batch stays full while rows remain.
Greedy ids are the reference engine's: same modules, same math, each row at its own positions.

Decode steps run over slots [0, n) with n a power of two, so a compiled step (`torch.compile`,
CUDA graphs on CUDA) sees a handful of shapes, all met in warm-up. A backbone whose kernels do not
compile (bitsandbytes, GPTQ) runs the same step eagerly, and says so once.

Observers (e.g. `runtime.scores`): every step also returns the probabilities of the observed ids,
handed to a row's observer when it asks; once a row ends, it stays in its slot one extra step per
branch its observer asks for (its token at its step's position), later positions first, so each
branch sees an intact past.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from runtime.engine import Backbone, Branch, Decoded, Finished, Observe, Observer, Row, StopRule, Unsupported, \
    register
from runtime.engine.step import StaticKV, Step
from runtime.engine.text import Pieces, Watcher, row_text

LEN_QUANTUM = 256  # the cache's length grows in steps of this many positions
PREFILL_TOKENS = 8192  # at most this many (padded) positions per prefill forward


@dataclass
class _Row:
    key: Any
    length: int       # its embedding row's length: the first new token goes at this position
    budget: int
    watcher: Watcher
    observer: Observer | None
    start: float
    prefill_seconds: float = 0.0
    ids: list[int] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)  # still to evaluate, the latest step last
    done: bool = False

    @property
    def position(self) -> int:  # where the last token goes when fed back
        return self.length + len(self.ids) - 1


def _buckets(slots: int) -> list[int]:
    out, n = [], 1
    while n < slots:
        out.append(n)
        n *= 2
    return out + [slots]


class FastDecoder:
    """`Decoder` with a static cache of `slots` rows and continuous batching."""

    name = "fast"

    def __init__(self, llm, tokenizer, slots: int = 8, compile: bool | None = None, quiet: bool = False,
                 compilable: bool = False):
        """compile None: on CUDA when the backbone may compile; compilable: the backbone's own answer
        (its method's: `runtime.formats.Method.compiles`; a checkpoint's 16-bit backbone may)."""
        self.llm, self.tokenizer, self.slots = llm, tokenizer, max(1, slots)
        self.pieces = Pieces(tokenizer)
        self.device = next(llm.parameters()).device
        self.dtype = llm.get_input_embeddings().weight.dtype
        self.compiled = (self.device.type == "cuda" and compilable) if compile is None else compile
        if compile is None and self.device.type == "cuda" and not compilable and not quiet:
            print("engine: this backbone's quantized layers do not compile; decoding eagerly", file=sys.stderr)
        self.step: Step | None = None
        self._decide = None
        self.observed: list[int] | None = None  # the ids whose probabilities each step returns

    def set_slots(self, slots: int) -> None:
        """Decode `slots` rows together from now on (the cache is made again at first use)."""
        self.slots, self.step, self._decide = max(1, slots), None, None

    @staticmethod
    def unsupported(llm) -> str | None:
        """Why this engine cannot run `llm` (None when it can): it implements Qwen2's full attention."""
        cfg = llm.config
        if cfg.model_type != "qwen2":
            return f"the fast engine runs Qwen2 backbones, not {cfg.model_type!r}"
        if getattr(cfg, "use_sliding_window", False) and cfg.max_window_layers < cfg.num_hidden_layers:
            return "the fast engine does not implement sliding-window attention (use_sliding_window is true)"
        return None

    # ------------------------------------------------------------ cache and step

    def _ensure(self, length: int) -> None:
        """A cache that holds `length` positions per slot (allocated once, grown rarely)."""
        if self.step is not None and self.step.cache.k.shape[3] >= length:
            return
        cfg = self.llm.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        size = -(-(length + 1) // LEN_QUANTUM) * LEN_QUANTUM  # its last position stays free: warm-up writes there
        cache = StaticKV(cfg.num_hidden_layers, self.slots, cfg.num_key_value_heads, size, head_dim,
                         self.dtype, self.device)
        if self.step is not None:  # keep the rows in flight
            old = self.step.cache
            cache.k[:, :, :, :old.k.shape[3]] = old.k
            cache.v[:, :, :, :old.v.shape[3]] = old.v
        self.step = Step(self.llm, cache)
        self._decide = self._compile(self._decide_eager) if self.compiled else self._decide_eager
        if self.compiled:  # compile (and on CUDA capture) every batch shape now, not mid-run
            for n in _buckets(self.slots):
                self._decide(torch.zeros(n, dtype=torch.long, device=self.device),
                             torch.full((n,), size - 1, device=self.device))

    @staticmethod
    def _compile(fn):
        return torch.compile(fn, mode="reduce-overhead" if torch.cuda.is_available() else None)

    def _decide_eager(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self._summary(self.step(tokens, positions))

    def _summary(self, logits: torch.Tensor) -> torch.Tensor:
        """[n, V] logits -> [n, 1 + k]: the greedy id, then the k observed ids' probabilities."""
        best = logits.argmax(-1, keepdim=True).to(torch.float32)
        if self.observed is None:
            return best
        probs = torch.softmax(logits.float(), -1)[:, self.observed]
        return torch.cat([best, probs], -1)

    # ------------------------------------------------------------ rows

    def _advance(self, row: _Row, out: list[float], stop: StopRule) -> None:
        """One step's outcome for a generating row: its new token, and whether it ended."""
        token = int(out[0])
        if row.observer is not None:
            row.observer.add(token, out[1:] if row.observer.wants() else None)
        row.ids.append(token)
        marked = row.watcher.add(token)
        if token in stop.eos_ids or marked or len(row.ids) >= row.budget:
            row.done = True
            if row.observer is not None:
                row.branches = sorted(row.observer.end(), key=lambda b: b.step)

    def _finish(self, row: _Row, stop: StopRule) -> Finished:
        return Finished(row.ids, row_text(self.tokenizer, row.ids, stop),
                        {} if row.observer is None else row.observer.result(), row.start, row.prefill_seconds,
                        time.perf_counter() - row.start)

    @torch.inference_mode()
    def stream(self, rows: Iterable[Row], stop: StopRule, observe: Observe | None = None
               ) -> Iterator[tuple[Any, Finished]]:
        """(key, row [L, H], budget) in -> (key, Finished) out, as rows end (not in input order)."""
        observed = None if observe is None else list(observe.ids)
        if observed != self.observed:  # the step returns other probabilities: a new step (and cache)
            self.observed, self.step, self._decide = observed, None, None
        waiting = iter(rows)
        busy: dict[int, _Row] = {}
        pending, exhausted, buckets = None, False, _buckets(self.slots)
        while True:
            while len(busy) < self.slots and not (exhausted and pending is None):
                free = sorted(set(range(self.slots)) - busy.keys())
                group, longest = [], 0
                while len(group) < len(free):  # rows waiting for free slots are prefilled together
                    if pending is None:
                        pending = next(waiting, None)
                        if pending is None:
                            exhausted = True
                            break
                    length = pending[1].shape[0]
                    if group and (len(group) + 1) * max(longest, length) > PREFILL_TOKENS:
                        break
                    group.append(pending)
                    longest, pending = max(longest, length), None
                if not group:
                    break
                start = time.perf_counter()
                new = [_Row(key, embeds.shape[0], budget, Watcher(self.pieces, stop.mark),
                            None if observe is None else observe(), start)
                       for key, embeds, budget in group]
                self._ensure(max(r.length + r.budget for r in new))
                outs = self._summary(self.step.prefill([e.to(self.dtype) for _, e, _ in group],
                                                       free[:len(group)])).tolist()
                for slot, row, out in zip(free, new, outs):
                    row.prefill_seconds = time.perf_counter() - start
                    self._advance(row, out, stop)
                    if row.done and not row.branches:
                        yield row.key, self._finish(row, stop)
                    else:
                        busy[slot] = row
            if not busy:
                return
            n = next(b for b in buckets if b > max(busy))
            tokens = [0] * n
            positions = [0] * n
            for slot, row in busy.items():
                if row.done:  # a branch: its token at its step's position
                    branch = row.branches[-1]
                    tokens[slot], positions[slot] = branch.token, row.length + branch.step
                else:
                    tokens[slot], positions[slot] = row.ids[-1], row.position
            out = self._decide(torch.tensor(tokens, device=self.device),
                               torch.tensor(positions, device=self.device)).tolist()
            for slot, row in list(busy.items()):
                if row.done:
                    row.observer.branch(row.branches.pop(), out[slot][1:])
                else:
                    self._advance(row, out[slot], stop)
                if row.done and not row.branches:
                    del busy[slot]
                    yield row.key, self._finish(row, stop)

    def decode(self, rows: list[torch.Tensor], stop: StopRule, max_new_tokens: int,
               budgets: list[int] | None = None, observe: Observe | None = None) -> Decoded:
        start = time.perf_counter()
        budgets = budgets or [max_new_tokens] * len(rows)
        done = dict(self.stream(zip(range(len(rows)), rows, budgets), stop, observe))
        finished = [done[i] for i in range(len(rows))]
        return Decoded.of(finished, start, max(len(f.ids) for f in finished))


def _build(b: Backbone) -> FastDecoder:
    why_not = FastDecoder.unsupported(b.llm)
    if why_not:
        raise Unsupported(why_not)
    return FastDecoder(b.llm, b.tokenizer, slots=b.slots, compile=b.compile, compilable=b.compilable)


register("fast", _build)
