"""The probability-weighted score: AITQE's scores are 0-10, written as digits after `"... Score": `.

At a score's first token the model gives each digit token a probability; p is their share among
the ten digit tokens (renormalized). A score of 10 takes two tokens, "1" then "0", so "1" stands
for 1 or 10: with q the probability of "0" right after "1" (from the full softmax at that next
position; the model's greedy path is not assumed to take "1", the engine evaluates that branch
when it does not), "1" is worth 1 * (1 - q) + 10 * q. The expected score is then

    E = sum over d != 1 of d * p[d]  +  p[1] * (1 + 9 * q)

which lies in [0, 10]. Continuations past two digits (e.g. "95") are out of the 0-10 range and
count as their first digit. None when the first token after the key is not a digit.
"""

from __future__ import annotations


def expected_score(p: list[float], q: float) -> float:
    """E[score] from the ten digits' probabilities p (any scale; renormalized here) and q = P("0" | "1")."""
    total = sum(p)
    return (sum(d * x for d, x in enumerate(p) if d != 1) + p[1] * (1 + 9 * q)) / total
