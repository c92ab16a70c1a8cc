"""What the fast engine watches in a row's text while it decodes, without decoding the text.

A row's text is the tokenizer's decoding of its ids (special tokens dropped). For a byte-level
BPE tokenizer (Qwen2's), that text's ASCII characters are exactly the ASCII characters of the
tokens' own decodings, laid end to end, and every non-ASCII byte yields a non-ASCII character in
both; so an ASCII mark such as `<Overall>` occurs in the text exactly when it occurs in the
concatenation of per-token pieces. `Watcher` keeps the last few characters of that concatenation
per row: the stop rule and the start of a score are then a string check per new token.
`tests/test_engine_fast.py` holds this to `tokenizer.decode` on random and model-made id sequences.
"""

from __future__ import annotations

import re

# The text just before a score's first digit: `"Overall Score": "` or `"Text Quality Score": `.
_SCORE_KEY = re.compile(r'"([^"{}]{1,40}) Score"\s*:\s*"?$')
_TAIL = 64  # characters kept per row: enough for the longest score key and the mark


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


def digit_ids(tokenizer) -> list[int] | None:
    """Token ids of "0".."9" when each digit is one token of its own, else None."""
    ids = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    if any(i is None or i == tokenizer.unk_token_id or tokenizer.decode([i]) != str(d) for d, i in enumerate(ids)):
        return None
    return ids


class Watcher:
    """One row's tail of text: has the mark appeared, and does a score start at the next token."""

    def __init__(self, pieces: Pieces, mark: str | None):
        if mark is not None and not mark.isascii():
            raise ValueError(f"stop mark {mark!r}: only ASCII marks can be matched on token ids")
        self.pieces, self.mark, self.tail = pieces, mark, ""

    def add(self, token: int) -> bool:
        """Append a token; True when the text now holds the mark."""
        text = self.tail + self.pieces(token)
        self.tail = text[-_TAIL:]
        return bool(self.mark) and self.mark in text

    def score_key(self) -> str | None:
        """The key (e.g. "Overall") whose score the next token starts, if the text ends right before one."""
        return score_key(self.tail)


def score_key(text: str) -> str | None:
    """The key (e.g. "Overall") whose score comes next, if `text` ends right before one."""
    m = _SCORE_KEY.search(text[-_TAIL:])
    return m.group(1) if m else None
