"""AITQE's scores as the model writes them, token by token: where a score starts, which ids are its
digits, the "1"/"10" rule, and the probability-weighted (expected) score. Every engine and bench's
teacher-forced pass see scores through this module (`Scores`, an `runtime.engine.Observe`);
`runtime.parse` reads the same scores from the finished text.

A score starts right after a `"<name> Score": ` key (the overall one quoted: `"Overall Score": "`).
At its first token the model gives each digit token a probability; p is their share among the ten
digit tokens (renormalized). A score of 10 takes two tokens, "1" then "0", so "1" stands for 1 or
10: with q the probability of "0" right after "1" (from the full softmax at that next position; the
model's greedy path is not assumed to take "1": when it does not, the observer asks its engine for
that branch), "1" is worth 1 * (1 - q) + 10 * q. The expected score is then

    E = sum over d != 1 of d * p[d]  +  p[1] * (1 + 9 * q)

which lies in [0, 10]. Continuations past two digits (e.g. "95") are out of the 0-10 range and
count as their first digit. No expected score when the first token after the key is not a digit.
"""

from __future__ import annotations

import re

from runtime.engine import Branch
from runtime.engine.text import Pieces, Watcher

# The text just before a score's first digit: `"Overall Score": "` or `"Text Quality Score": `.
_SCORE_KEY = re.compile(r'"([^"{}]{1,40}) Score"\s*:\s*"?$')


def score_key(text: str) -> str | None:
    """The key (e.g. "Overall") whose score comes next, if `text` ends right before one."""
    m = _SCORE_KEY.search(text[-64:])
    return m.group(1) if m else None


def digit_ids(tokenizer) -> list[int] | None:
    """Token ids of "0".."9" when each digit is one token of its own, else None."""
    ids = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    if any(i is None or i == tokenizer.unk_token_id or tokenizer.decode([i]) != str(d) for d, i in enumerate(ids)):
        return None
    return ids


def expected_score(p: list[float], q: float) -> float:
    """E[score] from the ten digits' probabilities p (any scale; renormalized here) and q = P("0" | "1")."""
    total = sum(p)
    return (sum(d * x for d, x in enumerate(p) if d != 1) + p[1] * (1 + 9 * q)) / total


class Scores:
    """Makes a `ScoreWatch` per row; observes the digits' probabilities (`ids`: "0".."9")."""

    def __init__(self, tokenizer, digits: list[int]):
        self.ids, self.pieces = tuple(digits), Pieces(tokenizer)

    @classmethod
    def of(cls, tokenizer) -> "Scores | None":
        """None when the tokenizer has no one-token digits (then no expected scores)."""
        digits = digit_ids(tokenizer)
        return None if digits is None else cls(tokenizer, digits)

    def __call__(self) -> "ScoreWatch":
        return ScoreWatch(self.pieces, self.ids)


class ScoreWatch:
    """One row's scores, seen as it decodes (an `runtime.engine.Observer`): result() is score key ->
    expected score, for each score whose first token is a digit (its last occurrence)."""

    def __init__(self, pieces: Pieces, digits: tuple[int, ...]):
        self.text, self.digits = Watcher(pieces, None), digits
        self.step = 0                      # tokens seen so far
        self.key: str | None = None        # the score whose first token the next token is
        self.after_one: int | None = None  # the step of a score's "1": the next probabilities give q
        self.p: dict[str, tuple[int, list[float]]] = {}  # key -> (step of its first digit, digits' probabilities)
        self.q: dict[int, float] = {}      # step of a first digit -> P("0") right after a "1" there

    def wants(self) -> bool:
        return self.key is not None or self.after_one is not None

    def add(self, token: int, probs: list[float] | None) -> None:
        if self.after_one is not None:
            self.q[self.after_one], self.after_one = probs[0], None
        if self.key is not None and token in self.digits:
            self.p[self.key] = (self.step, probs)
            if token == self.digits[1]:
                self.after_one = self.step
        self.step += 1
        self.text.add(token)
        self.key = score_key(self.text.tail)

    def end(self) -> list[Branch]:
        """A "1" branch at each score's first digit whose q is not known yet (not a "1", or a "1" that
        ended the row)."""
        self.after_one = None
        return [Branch(step, self.digits[1]) for step, _ in self.p.values() if step not in self.q]

    def branch(self, branch: Branch, probs: list[float]) -> None:
        self.q[branch.step] = probs[0]

    def result(self) -> dict[str, float]:
        return {key: expected_score(p, self.q[step]) for key, (step, p) in self.p.items() if step in self.q}
