"""The decode seam: embedding rows (+ stop rule and token budget) in, token ids and texts out.

Every caller that generates (the scorer, calibration with answers, bench) goes through a `Decoder`;
an engine is one implementation of it. `engine.reference.ReferenceDecoder` is transformers'
`generate`, the path the original AITQE code runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class StopRule:
    """When a row ends: after one of `eos_ids` (kept in its ids), or once its text holds `mark`."""

    eos_ids: tuple[int, ...]
    mark: str | None = None  # None: run to an end-of-generation id or the token budget


@dataclass
class Decoded:
    ids: list[list[int]]  # new token ids per row, up to and including the token that ended it
    texts: list[str]      # their text, up to the end-of-generation id and, with a mark, cut after it
    seconds: float
    steps: int            # decode steps the batch ran (its longest row)
    prefill_seconds: float  # until the first new tokens (the prompt's forward pass)
    expected: list[dict[str, float]] | None = None  # per row: score key -> probability-weighted score


class Decoder(Protocol):
    def decode(self, rows: list[torch.Tensor], stop: StopRule, max_new_tokens: int,
               budgets: list[int] | None = None) -> Decoded:
        """Greedy-decode each row (embeddings [L_i, H]: image, then prompt) independently of its
        batch-mates; row i ends after budgets[i] new tokens at most (default: max_new_tokens)."""
        ...
