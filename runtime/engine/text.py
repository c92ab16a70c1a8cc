"""A row's text from its token ids, for every engine: its decoded text, where it ends, and the stop
mark watched on token ids without decoding.

A row's text is the tokenizer's decoding of its ids (special tokens dropped). For a byte-level
BPE tokenizer (Qwen2's), that text's ASCII characters are exactly the ASCII characters of the
tokens' own decodings, laid end to end, and every non-ASCII byte yields a non-ASCII character in
both; so an ASCII mark such as `<Overall>` occurs in the text exactly when it occurs in the
concatenation of per-token pieces. `Watcher` keeps the last few characters of that concatenation
per row: the stop rule is then a string check per new token.
`tests/test_engine_fast.py` holds this to `tokenizer.decode` on random and model-made id sequences.
"""

from __future__ import annotations

from runtime.engine import StopRule

TAIL = 64  # characters a `Watcher` keeps: enough for a mark, or a score key of up to 40 characters


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


class Pieces:
    """Each token id's own text (cached), as the original decodes it: special tokens and ids past
    the tokenizer (padded embedding rows) have none."""

    def __init__(self, tokenizer):
        self.tokenizer, self._cache = tokenizer, {}
        self.special = set(tokenizer.all_special_ids)
        self.size = len(tokenizer)

    def __call__(self, token: int) -> str:
        piece = self._cache.get(token)
        if piece is None:
            piece = "" if token >= self.size or token in self.special else \
                self.tokenizer.decode([token], skip_special_tokens=True)
            self._cache[token] = piece
        return piece


class Watcher:
    """One row's tail of text (its last `TAIL` characters): has the mark appeared."""

    def __init__(self, pieces: Pieces, mark: str | None):
        if mark is not None and not mark.isascii():
            raise ValueError(f"stop mark {mark!r}: only ASCII marks can be matched on token ids")
        self.pieces, self.mark, self.tail = pieces, mark, ""

    def add(self, token: int) -> bool:
        """Append a token; True when the text now holds the mark."""
        text = self.tail + self.pieces(token)
        self.tail = text[-TAIL:]
        return bool(self.mark) and self.mark in text
