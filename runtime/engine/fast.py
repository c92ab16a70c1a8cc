"""The fast engine: static KV cache, one compiled decode step, continuous batching.

Rows (embedding rows [L, H]) wait in their input order; free slots of the static cache take the
next ones, all in one prefill forward, and every step advances all busy slots by one token. A row
leaves its slot as soon as it ends (an end-of-generation id, the stop mark seen on token ids, or its
token budget); once `refill` slots are free (an eighth of them by default) they take the next waiting
rows together, one prefill for all instead of one per freed slot, so the batch stays nearly full
while rows remain. Each step's token ids and positions go to the card in one non-blocking copy from
pinned memory, and its outcome comes back in one transfer.
Greedy ids are the reference engine's: same modules, same math, each row at its own positions.

The cache is allocated once per run, at a fixed length (`max_len`; by default what the longest
admissible row needs, prompt plus budget up to the model's context) for the most slots used; on CUDA
the slots are sized from free memory after load (at most what was asked), said in one line. A row
needing more positions than the cache holds is an error, never a mid-run regrow. Decode steps run
over slots [0, n) with n a power of two (views of the one cache), so a compiled step (`torch.compile`,
static shapes, CUDA graphs on CUDA) compiles once per bucket, all in warm-up, each bucket called
WARM_CALLS times there (CUDA graph trees record on a later call than the first); `compiles` counts
the graphs compiled. A backbone whose kernels
do not compile (its method says so) runs the same step eagerly, and says so once.

Observers (e.g. `runtime.scores`): every step also returns the probabilities of the observed ids,
handed to a row's observer when it asks; once a row ends, it stays in its slot one extra step per
branch its observer asks for (its token at its step's position), later positions first, so each
branch sees an intact past.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from runtime.engine import Backbone, Branch, Decoded, Finished, Observe, Observer, Row, StopRule, Unsupported, \
    register, upload
from runtime.engine.step import StaticKV, Step
from runtime.engine.text import Pieces, Watcher, row_text

LEN_QUANTUM = 256  # the cache's length is a multiple of this many positions
WARM_CALLS = 3  # calls per bucket in warm-up: compile, then CUDA graph trees warm up and record
MEMORY_SHARE = 0.6  # of the free CUDA memory after load, what the cache may take (prefill and graphs need the rest)
PREFILL_TOKENS = 8192  # at most this many (padded) positions per prefill forward
REFILL_SHARE = 8  # by default, free slots are refilled together once 1/REFILL_SHARE of them are free


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


def can_compile() -> bool:
    """Whether Inductor finds a C compiler (it builds its kernels' launchers with one)."""
    return any(shutil.which(c) for c in (os.environ.get("CC", ""), "cc", "gcc", "clang") if c)


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
                 compilable: bool = False, max_len: int | None = None, refill: int | None = None):
        """compile None: on CUDA when the backbone may compile; compilable: the backbone's own answer
        (its method's: `runtime.formats.Method.compiles`; a checkpoint's 16-bit backbone may); max_len:
        positions per slot (None: the model's context); refill: free slots that wait for each other to
        be prefilled together while other slots decode (None: an eighth of the slots, at least 1)."""
        self.llm, self.tokenizer, self.slots, self.quiet = llm, tokenizer, max(1, slots), quiet
        self.refill = refill
        self.max_len = max_len or llm.config.max_position_embeddings
        self.compiles = 0  # graphs compiled for this decoder's step
        self.pieces = Pieces(tokenizer)
        self.device = next(llm.parameters()).device
        self.dtype = llm.get_input_embeddings().weight.dtype
        self.compiled = (self.device.type == "cuda" and compilable) if compile is None else compile
        if compile is None and self.device.type == "cuda" and not compilable and not quiet:
            print("engine: this backbone's quantized layers do not compile; decoding eagerly", file=sys.stderr)
        if compile is None and self.compiled and not can_compile():
            self.compiled = False
            print("engine: no C compiler found (Inductor needs one: set CC); decoding eagerly", file=sys.stderr)
        self.step: Step | None = None
        self._decide = None
        self.observed: list[int] | None = None  # the ids whose probabilities each step returns

    def set_slots(self, slots: int) -> None:
        """Decode `slots` rows together from now on: views of the cache when it has that many, else a
        new cache at first use."""
        self.slots = max(1, slots)
        if self.step is not None and self.step.cache.k.shape[1] < self.slots:
            self.step, self._decide = None, None

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
        """Refuse a row of `length` positions (prompt and budget) that the run's cache cannot hold."""
        if length >= self.step.cache.k.shape[3]:
            raise ValueError(f"a row needs {length} positions and the decode cache holds "
                             f"{self.step.cache.k.shape[3] - 1}; raise max_len or lower the batch size")

    def _allocate(self) -> None:
        cfg = self.llm.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        size = -(-(self.max_len + 1) // LEN_QUANTUM) * LEN_QUANTUM  # its last position stays free: warm-up writes there
        per_slot = StaticKV.bytes_per_slot(cfg.num_hidden_layers, cfg.num_key_value_heads, size, head_dim, self.dtype)
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
            fit = max(1, int(free * MEMORY_SHARE) // per_slot)
            asked, self.slots = self.slots, min(self.slots, fit)
            if not self.quiet or fit < asked:
                print(f"engine: {self.slots} slots of {size} positions (asked for {asked}; {fit} fit in "
                      f"{MEMORY_SHARE:.0%} of {free / 2**30:.1f} GiB free after load)", file=sys.stderr)
        self.step = Step(self.llm, StaticKV(cfg.num_hidden_layers, self.slots, cfg.num_key_value_heads, size,
                                            head_dim, self.dtype, self.device))
        self._decide = self._compile(self._decide_eager) if self.compiled else self._decide_eager
        if self.compiled:  # compile every bucket now, not mid-run; CUDA graph trees record on a later call
            for n in _buckets(self.slots):
                for _ in range(WARM_CALLS):
                    self._call(torch.zeros(n, dtype=torch.long, device=self.device),
                               torch.full((n,), size - 1, device=self.device))

    def _compile(self, fn):
        limit = len(_buckets(self.slots)) + 2  # one graph per bucket, and a change of observed ids
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        return torch.compile(fn, dynamic=False, mode="reduce-overhead" if self.device.type == "cuda" else None)

    def _call(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One decode step through `_decide`, counting the graphs it compiles."""
        before = counters["stats"]["unique_graphs"]
        out = self._decide(tokens, positions)
        self.compiles += counters["stats"]["unique_graphs"] - before
        return out

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
        if self.step is None:
            self._allocate()
        waiting = iter(rows)
        busy: dict[int, _Row] = {}
        pending, exhausted = None, False
        refill = self.refill or max(1, self.slots // REFILL_SHARE)
        while True:
            while self.slots - len(busy) >= min(refill, self.slots) or not busy:
                if exhausted and pending is None:
                    break
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
            n = next(b for b in _buckets(self.step.cache.k.shape[1]) if b > max(busy))  # buckets of the cache's slots: views of it
            tokens = [0] * n
            positions = [0] * n
            for slot, row in busy.items():
                if row.done:  # a branch: its token at its step's position
                    branch = row.branches[-1]
                    tokens[slot], positions[slot] = branch.token, row.length + branch.step
                else:
                    tokens[slot], positions[slot] = row.ids[-1], row.position
            moved = upload(torch.tensor([tokens, positions]), self.device)  # one copy to the card
            out = self._call(moved[0], moved[1]).tolist()  # and one back
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
