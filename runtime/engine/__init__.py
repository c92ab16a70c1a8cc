"""The decode seam: embedding rows (+ stop rule and token budget) in, token ids and texts out.

Every caller that generates (the scorer, calibration with answers, bench) goes through a `Decoder`;
an engine is one implementation of it, registered here by name (`register`). Each module of this
package that registers an engine is found and imported on first use, so a new engine is one new
file: `engine.reference` is transformers' `generate`, the path the original AITQE code runs;
`engine.fast` is a static KV cache with continuous batching; `engine.gguf` is llama.cpp over a
GGUF export (its rows are `Prompted`: image embeddings and prompt ids). An engine that cannot run a backbone
raises `Unsupported` from its factory, and `build` falls back to the reference engine.

Engines produce tokens. What a caller watches in a row (AITQE's scores: `runtime.scores`) is an
`Observer`, one per row, fed each new token and, when it asks, the probabilities of its ids at that
step; it may also ask for branches: a given token fed at a given step, and the probabilities of its
ids at the next position.

Timings (`time.perf_counter` seconds): a row's `start` is when its prefill began; its
`prefill_seconds` run from there until its first new token, and its `seconds` until its last token
(the fast engine: its branches too; the reference engine evaluates branches after its batch's
`generate`, outside its timings). A batch's (`Decoded`): from the call until the first new token of
any row, and until the last row ended.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch


def upload(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Host tensor `t` on `device`: on CUDA copied from pinned memory without blocking this thread (the
    card runs the copy before the work queued after it); elsewhere as it is (`.to` is a no-op on CPU)."""
    pinned = t.pin_memory() if torch.device(device).type == "cuda" else t
    return pinned.to(device, non_blocking=True)


@dataclass(frozen=True)
class StopRule:
    """When a row ends: after one of `eos_ids` (kept in its ids), or once its text holds `mark`."""

    eos_ids: tuple[int, ...]
    mark: str | None = None  # None: run to an end-of-generation id or the token budget


@dataclass(frozen=True)
class Branch:
    """Feed `token` as a row's new token number `step` (0-based) instead of the one it took; report
    the observed ids' probabilities at the position after it."""

    step: int
    token: int


class Observer(Protocol):
    """What a caller watches in one row while it decodes."""

    def wants(self) -> bool:
        """Whether the next token should come with the observed ids' probabilities."""
        ...

    def add(self, token: int, probs: list[float] | None) -> None:
        """The row's next token; probs: the observed ids' probabilities in the distribution it was
        taken from (full softmax), when `wants()` said so, else None."""
        ...

    def end(self) -> list[Branch]:
        """The row has ended: the branches still to evaluate."""
        ...

    def branch(self, branch: Branch, probs: list[float]) -> None:
        """A branch's outcome: the observed ids' probabilities after its token."""
        ...

    def result(self) -> dict[str, float]:
        ...


class Observe(Protocol):
    """Makes one `Observer` per row; `ids`: the token ids whose probabilities observers may ask for."""

    ids: tuple[int, ...]

    def __call__(self) -> Observer:
        ...


def replay(observer: Observer, ids: list[int], probs_at: Callable[[int], list[float]], known: int,
           evaluate: Callable[[Branch], list[float]]) -> dict[str, float]:
    """Feed a row whose ids are all known to `observer`: probs_at(k) gives the observed ids'
    probabilities at step k, for k < known. A branch that feeds the token the row took, with the
    next step's distribution known, reads it; any other is `evaluate`d."""
    for k, token in enumerate(ids):
        observer.add(token, probs_at(k) if observer.wants() else None)
    for b in observer.end():
        took = b.step + 1 < known and ids[b.step] == b.token
        observer.branch(b, probs_at(b.step + 1) if took else evaluate(b))
    return observer.result()


@dataclass
class Finished:
    """One row, ended: its new ids (up to and including the token that ended it), their text (up to the
    end-of-generation id and, with a mark, cut after it), what its observer reported, its timings."""

    ids: list[int]
    text: str
    expected: dict[str, float]  # the observer's result (AITQE: score key -> expected score); {} without one
    start: float            # perf_counter when its prefill began
    prefill_seconds: float  # from `start` until its first new token
    seconds: float          # from `start` until it ended


@dataclass
class Decoded:
    ids: list[list[int]]  # per row, as `Finished`
    texts: list[str]
    seconds: float          # from the call until the last row ended
    steps: int              # decode steps the batch ran (its longest row)
    prefill_seconds: float  # from the call until the first new token of any row
    expected: list[dict[str, float]]

    @classmethod
    def of(cls, rows: list[Finished], start: float, steps: int) -> "Decoded":
        """The batch of `rows` (in input order) of a call that began at `start`."""
        return cls([f.ids for f in rows], [f.text for f in rows], max(f.start + f.seconds for f in rows) - start,
                   steps, min(f.start + f.prefill_seconds for f in rows) - start, [f.expected for f in rows])


@dataclass(frozen=True)
class Prompted:
    """A row for an engine that embeds the prompt's tokens itself (llama.cpp): the image's projected
    embeddings [T, H], then the prompt as token ids."""

    image: Any  # float [T, H] (a numpy array or a tensor)
    ids: list[int]


# (key, embeddings [L, H]: image, then prompt; or a `Prompted` for an engine that takes ids; token budget)
Row = tuple[Any, "torch.Tensor | Prompted", int]


class Decoder(Protocol):
    name: str       # the name it is registered under
    slots: int      # rows decoded together
    compiled: bool  # whether its decode step is compiled
    compiles: int   # graphs compiled for its decode step so far (0: eager)

    def set_slots(self, slots: int) -> None:
        """Decode `slots` rows together from now on."""
        ...

    def stream(self, rows: Iterable[Row], stop: StopRule, observe: Observe | None = None
               ) -> Iterator[tuple[Any, Finished]]:
        """Greedy-decode each row independently of its batch-mates, `slots` at a time; each row
        (key, Finished) out as soon as it and its batch allow, not necessarily in input order."""
        ...

    def decode(self, rows: list[torch.Tensor], stop: StopRule, max_new_tokens: int,
               budgets: list[int] | None = None, observe: Observe | None = None) -> Decoded:
        """All rows (embeddings [L_i, H]) at once, in input order; row i ends after budgets[i] new
        tokens at most (default: max_new_tokens)."""
        ...


@dataclass(frozen=True)
class Backbone:
    """What an engine is built from: the causal LM and its tokenizer, and the caller's choices."""

    llm: torch.nn.Module
    tokenizer: Any
    pad_token_id: int
    slots: int = 8
    compile: bool | None = None     # None: the engine decides (compile where it may)
    compilable: bool = False        # the backbone's own answer to "may this compile" (its method's)


class Unsupported(Exception):
    """An engine cannot run this backbone; the message says why."""


FALLBACK = "reference"  # runs every backbone transformers runs
_ENGINES: dict[str, Callable[[Backbone], Decoder]] = {}
_found = False


def register(name: str, factory: Callable[[Backbone], Decoder]) -> None:
    """Make an engine available as `name` (to `Scorer(engine=name)` and the command lines)."""
    _ENGINES[name] = factory


def _find() -> None:
    """Import every module of this package once, so each engine in it registers itself."""
    global _found
    if not _found:
        _found = True
        for m in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{m.name}")


def names() -> tuple[str, ...]:
    _find()
    return tuple(sorted(_ENGINES))


def build(name: str, backbone: Backbone) -> Decoder:
    """The engine `name` over `backbone`; the reference engine, saying why, when it cannot run it."""
    _find()
    try:
        return _ENGINES[name](backbone)
    except Unsupported as e:
        print(f"engine: {e}; using the {FALLBACK} engine", file=sys.stderr)
        return _ENGINES[FALLBACK](backbone)
