"""How a candidate's verdicts compare with the reference's, on the same pairs (and how a model's
compare with gold verdicts: the same functions, the gold side as the reference).

Agreement, defined once here: the share of pairs whose overall score equals the reference's, both
models writing whole verdicts greedily (a missing score is a value like any other, so two missing
scores agree). The overall score comes before `<Overall>`, so it is also what the default
stop-at-Overall mode gives. Besides it: overall within 1, mean absolute difference, Spearman and
Kendall correlation (pairs where both scored, scipy), sub-score agreement, recaption token F1 and
ROUGE-L F (rouge-score) against the reference's recaption, JSON validity, and agreement of the
enhancement decision (replace the caption when overall < threshold).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from rouge_score.rouge_scorer import RougeScorer
from scipy.stats import kendalltau, spearmanr

from runtime.parse import SUB_SCORES
from runtime.scorer import Verdict


def mean(xs) -> float:
    xs = list(xs)
    return float(np.mean(xs)) if xs else math.nan


def agreement(ref: list[int | None], cand: list[int | None]) -> float:
    """The share of pairs whose overall score equals the reference's."""
    return mean(a == b for a, b in zip(ref, cand, strict=True))


def within_1(ref: list[int | None], cand: list[int | None]) -> float:
    return mean(a is not None and b is not None and abs(a - b) <= 1 for a, b in zip(ref, cand, strict=True))


def correlation(fn, a, b) -> float:
    """scipy's `fn` (spearmanr, kendalltau) of a and b; nan when either side is constant."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(fn(a, b)[0])


def token_f1(pred: str | None, gold: str) -> float:
    """SQuAD-style bag-of-words F1 on lower-cased whitespace tokens (punctuation split off)."""
    def toks(s):
        return s.lower().replace(",", " ,").replace(";", " ;").replace(":", " :").split()
    p, g = toks(pred or ""), toks(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return float(not p and not g)
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def verdict_agreement(ref: list[Verdict], cand: list[Verdict], threshold: int) -> dict:
    """Every figure of the module docstring, for verdicts of the same pairs."""
    ref_scores, cand_scores = [r.overall_score for r in ref], [c.overall_score for c in cand]
    both = [(a, b) for a, b in zip(ref_scores, cand_scores) if a is not None and b is not None]
    a, b = [x for x, _ in both], [y for _, y in both]
    subs = {}
    for name in SUB_SCORES:
        scored = [(r.sub_scores[name].get("score"), c.sub_scores.get(name, {}).get("score"))
                  for r, c in zip(ref, cand) if name in r.sub_scores]
        subs[name] = mean(x == y for x, y in scored)
    rouge = RougeScorer(["rougeL"])
    with_recap = [(r.recaption, c.recaption) for r, c in zip(ref, cand) if r.recaption]

    def decision(score: int | None):
        return None if score is None else score < threshold

    return {
        "pairs": len(ref), "both_scored": len(both),
        "overall_agreement": agreement(ref_scores, cand_scores), "overall_within_1": within_1(ref_scores, cand_scores),
        "overall_mad": mean(abs(x - y) for x, y in both),
        "spearman": correlation(spearmanr, a, b), "kendall": correlation(kendalltau, a, b),
        "sub_score_agreement": subs, "sub_score_agreement_mean": mean(v for v in subs.values() if not math.isnan(v)),
        "recaption_f1": mean(token_f1(c, r) for r, c in with_recap),
        "recaption_rouge_l": mean(rouge.score(r, c or "")["rougeL"].fmeasure for r, c in with_recap),
        "json_valid": mean(c.parse_error is None and c.error is None for c in cand),
        "enhance_threshold": threshold,
        "enhance_agreement": mean(decision(x) == decision(y) for x, y in zip(ref_scores, cand_scores)),
        "replaced_share": mean(decision(y) is True for y in cand_scores),
    }
