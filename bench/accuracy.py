"""How much of the reference's judgement a candidate keeps, on the same pairs.

Generated (both models write the full verdict, greedy): overall and sub-score exact agreement,
overall within 1, mean absolute difference, Spearman and Kendall correlation (pairs where both
scored), recaption token F1 and ROUGE-L F against the reference's recaption, JSON validity, and
agreement of the enhancement decision (replace the caption when overall < threshold).

Teacher-forced on the reference's own full answer (each model with its own vision side):
per-token KL divergence KL(reference || candidate) over the whole vocabulary, mean and p99, and
top-1 agreement, as llama.cpp's perplexity --kl-divergence reports them; and the expected overall
score, sum(v * p(v)) over the score tokens ("1".."10", renormalised) at the position of the overall
score. A tokenizer that splits "10" into digits counts its mass under "1"; AITQE's scores seen are
1-9 on the demo model.

The correlations and ROUGE-L come from scipy and rouge-score. The teacher-forced metrics are a few
tensor operations written here: llama.cpp's tool works on GGUF text models, and evaluation harnesses
(lm-eval) score log-likelihoods of text choices, not of a multimodal prompt fed as inputs_embeds.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from rouge_score.rouge_scorer import RougeScorer
from scipy.stats import kendalltau, spearmanr
from tqdm import tqdm

from quantize.agreement import prompt_embeddings
from runtime.demo.evaluate import token_f1
from runtime.parse import SUB_SCORES
from runtime.scorer import Pair, Scorer, Verdict

OVERALL_KEY = '"Overall Score"'


def score_token_values(tokenizer) -> dict[int, int]:
    """Token id -> score for the tokens whose text is a whole number 1..10."""
    values = {}
    for tok_id in range(len(tokenizer)):
        text = tokenizer.decode([tok_id]).strip()
        if text.isdigit() and 1 <= int(text) <= 10:
            values[tok_id] = int(text)
    return values


def answer_tokens(tokenizer, text: str, eos: tuple[int, ...]) -> tuple[list[int], int | None]:
    """Token ids of the answer (+ its first end-of-generation id), and the index of the overall score's
    first token (None: absent)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"]) + list(eos[:1])
    key = text.find(OVERALL_KEY)
    digit = next((i for i in range(key + len(OVERALL_KEY), len(text)) if text[i].isdigit()), None) if key >= 0 else None
    score_at = None
    if digit is not None:
        score_at = next((i for i, (a, b) in enumerate(enc["offset_mapping"]) if a <= digit < b), None)
    return ids, score_at


@torch.inference_mode()
def answer_logprobs(scorer: Scorer, pairs: list[Pair], answers: list[list[int]]) -> list[torch.Tensor]:
    """Log-probabilities [A_i, V] (fp32, CPU) that `scorer` gives each answer token, teacher-forced."""
    rows = prompt_embeddings(scorer, pairs)  # the prompts the answers were generated from
    embed = scorer.llm.get_input_embeddings()
    full = [torch.cat([r, embed(torch.tensor(a, device=r.device))]) for r, a in zip(rows, answers)]
    length = max(len(f) for f in full)
    embeds = full[0].new_zeros(len(full), length, full[0].shape[1])
    mask = torch.zeros(len(full), length, dtype=torch.long, device=full[0].device)
    for i, f in enumerate(full):  # right padding: real tokens never attend to it
        embeds[i, : len(f)], mask[i, : len(f)] = f, 1
    hidden = scorer.llm.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    out = []
    for i, (r, a) in enumerate(zip(rows, answers)):
        at = hidden[i, len(r) - 1: len(r) - 1 + len(a)]  # positions that predict the answer tokens
        out.append(torch.log_softmax(scorer.llm.lm_head(at).float(), dim=-1).cpu())
    return out


def expected_score(logprobs: torch.Tensor, values: dict[int, int]) -> float:
    ids = torch.tensor(list(values))
    p = logprobs[ids].exp()
    return float((p * torch.tensor(list(values.values()), dtype=p.dtype)).sum() / p.sum())


def teacher_forced(ref: Scorer, cand: Scorer, pairs: list[Pair], ref_verdicts: list[Verdict], batch_size: int,
                   desc: str) -> dict:
    if len(ref.tokenizer) != len(cand.tokenizer):
        raise ValueError("reference and candidate tokenizers differ; teacher-forced metrics need the same one")
    values = score_token_values(ref.tokenizer)
    todo = [(p, v) for p, v in zip(pairs, ref_verdicts) if v.raw_text and v.error is None]
    kl, top1, e_ref, e_cand = [], [], [], []
    for i in tqdm(range(0, len(todo), batch_size), desc=desc, file=sys.stderr, leave=False):
        chunk = todo[i:i + batch_size]
        answers = [answer_tokens(ref.tokenizer, v.raw_text, ref.eos.ids) for _, v in chunk]
        ids = [a for a, _ in answers]
        lp_ref = answer_logprobs(ref, [p for p, _ in chunk], ids)
        lp_cand = answer_logprobs(cand, [p for p, _ in chunk], ids)
        for (_, at), r, c in zip(answers, lp_ref, lp_cand):
            vocab = min(r.shape[1], c.shape[1], len(ref.tokenizer))
            r, c = r[:, :vocab], c[:, :vocab]
            kl += (r.exp() * (r - c)).sum(-1).clamp_min(0).tolist()
            top1 += (r.argmax(-1) == c.argmax(-1)).tolist()
            if at is not None and values:
                e_ref.append(expected_score(r[at], values))
                e_cand.append(expected_score(c[at], values))
    kl_arr = np.array(kl)
    return {"tokens": len(kl), "kl_mean": float(kl_arr.mean()) if kl else math.nan,
            "kl_p99": float(np.percentile(kl_arr, 99)) if kl else math.nan,
            "kl_median": float(np.median(kl_arr)) if kl else math.nan,
            "top1_agreement": float(np.mean(top1)) if top1 else math.nan,
            "expected_score_ref": float(np.mean(e_ref)) if e_ref else math.nan,
            "expected_score_cand": float(np.mean(e_cand)) if e_cand else math.nan,
            "expected_score_mad": float(np.mean(np.abs(np.array(e_ref) - np.array(e_cand)))) if e_ref else math.nan}


def _mean(xs) -> float:
    xs = list(xs)
    return float(np.mean(xs)) if xs else math.nan


def _corr(fn, a, b) -> float:
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(fn(a, b)[0])


def verdict_agreement(ref: list[Verdict], cand: list[Verdict], threshold: int) -> dict:
    both = [(r.overall_score, c.overall_score) for r, c in zip(ref, cand)
            if r.overall_score is not None and c.overall_score is not None]
    a, b = [x for x, _ in both], [y for _, y in both]
    subs = {}
    for name in SUB_SCORES:
        scored = [(r.sub_scores[name].get("score"), c.sub_scores.get(name, {}).get("score"))
                  for r, c in zip(ref, cand) if name in r.sub_scores]
        subs[name] = _mean(x == y for x, y in scored)
    rouge = RougeScorer(["rougeL"])
    with_recap = [(r.recaption, c.recaption) for r, c in zip(ref, cand) if r.recaption]

    def decision(v: Verdict):
        return None if v.overall_score is None else v.overall_score < threshold

    return {
        "pairs": len(ref), "both_scored": len(both),
        "overall_agreement": _mean(r.overall_score == c.overall_score for r, c in zip(ref, cand)),
        "overall_within_1": _mean(x is not None and y is not None and abs(x - y) <= 1
                                  for x, y in ((r.overall_score, c.overall_score) for r, c in zip(ref, cand))),
        "overall_mad": _mean(abs(x - y) for x, y in both),
        "spearman": _corr(spearmanr, a, b), "kendall": _corr(kendalltau, a, b),
        "sub_score_agreement": subs, "sub_score_agreement_mean": _mean(v for v in subs.values() if not math.isnan(v)),
        "recaption_f1": _mean(token_f1(c, r) for r, c in with_recap),
        "recaption_rouge_l": _mean(rouge.score(r, c or "")["rougeL"].fmeasure for r, c in with_recap),
        "json_valid": _mean(c.parse_error is None and c.error is None for c in cand),
        "enhance_threshold": threshold,
        "enhance_agreement": _mean(decision(r) == decision(c) for r, c in zip(ref, cand)),
        "replaced_share": _mean(decision(c) is True for c in cand),
    }
