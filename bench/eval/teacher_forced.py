"""Teacher-forced comparisons of a candidate's backbone with the reference's, on the reference's own
full answers (each model with its own vision side):

- per-token KL divergence KL(reference || candidate) over the whole vocabulary, mean and p99, and
  top-1 agreement, as llama.cpp's perplexity --kl-divergence reports them;
- the expected overall score, as the runtime defines it (`runtime.scores`: the digits' probabilities
  where the overall score starts, and P("0") after a "1", by a forward pass of its own when the
  answer does not take "1");
- per decoder layer, the signal-to-noise ratio of the candidate's hidden states against the
  reference's on the same input rows.

These are a few tensor operations written here: llama.cpp's tool works on GGUF text models, and
evaluation harnesses (lm-eval) score log-likelihoods of text choices, not of a multimodal prompt
fed as inputs_embeds.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from tqdm import tqdm

from bench.eval.metrics import mean
from runtime.engine import Branch, replay
from runtime.scorer import DEFAULT_MAX_NEW_TOKENS, Pair, Scorer, Verdict
from runtime.scores import Scores


def answer_tokens(tokenizer, text: str, eos: tuple[int, ...]) -> list[int]:
    """Token ids of the answer (+ its first end-of-generation id)."""
    return list(tokenizer(text, add_special_tokens=False).input_ids) + list(eos[:1])


@torch.inference_mode()
def prompt_rows(scorer: Scorer, pairs: list[Pair]) -> list[torch.Tensor]:
    """The backbone's input rows (image embeddings + prompt) of `scorer`, caption cut as for generation."""
    return scorer.encode([scorer.prepare(p, DEFAULT_MAX_NEW_TOKENS) for p in pairs])


@torch.inference_mode()
def layer_snr(reference: torch.nn.Module, candidate: torch.nn.Module, rows: list[torch.Tensor]) -> list[float]:
    """SNR in dB of each decoder layer's output (and the final norm's) against the reference's."""
    signal = noise = None
    for row in rows:
        outs = []
        for llm in (reference, candidate):
            dtype = llm.get_input_embeddings().weight.dtype
            hidden = llm(inputs_embeds=row[None].to(dtype), output_hidden_states=True).hidden_states[1:]
            outs.append(torch.stack([h[0].double() for h in hidden]))
        s = outs[0].pow(2).sum(dim=(1, 2))
        n = (outs[0] - outs[1]).pow(2).sum(dim=(1, 2))
        signal, noise = (s, n) if signal is None else (signal + s, noise + n)
    return [10 * math.log10(s / n) if n > 0 else math.inf for s, n in zip(signal.tolist(), noise.tolist())]


@torch.inference_mode()
def answer_logprobs(scorer: Scorer, rows: list[torch.Tensor], answers: list[list[int]]) -> list[torch.Tensor]:
    """Log-probabilities [A_i, V] (fp32, CPU) that `scorer` gives each answer token after its prompt row
    (`prompt_rows`), teacher-forced."""
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


def expected_overall(scorer: Scorer, scores: Scores, row: torch.Tensor, answer: list[int],
                     logprobs: torch.Tensor) -> float | None:
    """The expected overall score of a teacher-forced answer (None: it has none)."""
    digits = list(scores.ids)

    def evaluate(branch: Branch) -> list[float]:  # the answer up to the branch's token, and one more to read after it
        tail = answer[:branch.step] + [branch.token] * 2
        return answer_logprobs(scorer, [row], [tail])[0][branch.step + 1, digits].exp().tolist()

    return replay(scores(), answer, lambda k: logprobs[k, digits].exp().tolist(), len(answer), evaluate).get("Overall")


def teacher_forced(ref: Scorer, cand: Scorer, pairs: list[Pair], ref_verdicts: list[Verdict], batch_size: int,
                   desc: str) -> dict:
    if len(ref.tokenizer) != len(cand.tokenizer):
        raise ValueError("reference and candidate tokenizers differ; teacher-forced metrics need the same one")
    scores = Scores.of(ref.tokenizer)
    todo = [(p, v) for p, v in zip(pairs, ref_verdicts) if v.raw_text and v.error is None]
    kl, top1, e_ref, e_cand = [], [], [], []
    for i in tqdm(range(0, len(todo), batch_size), desc=desc, file=sys.stderr, leave=False):
        chunk = todo[i:i + batch_size]
        answers = [answer_tokens(ref.tokenizer, v.raw_text, ref.eos.ids) for _, v in chunk]
        rows_ref, rows_cand = prompt_rows(ref, [p for p, _ in chunk]), prompt_rows(cand, [p for p, _ in chunk])
        lp_ref, lp_cand = answer_logprobs(ref, rows_ref, answers), answer_logprobs(cand, rows_cand, answers)
        for a, row_r, row_c, r, c in zip(answers, rows_ref, rows_cand, lp_ref, lp_cand):
            vocab = min(r.shape[1], c.shape[1], len(ref.tokenizer))
            rv, cv = r[:, :vocab], c[:, :vocab]
            kl += (rv.exp() * (rv - cv)).sum(-1).clamp_min(0).tolist()
            top1 += (rv.argmax(-1) == cv.argmax(-1)).tolist()
            e = scores and expected_overall(ref, scores, row_r, a, r)
            if e is not None:
                e_ref.append(e)
                e_cand.append(expected_overall(cand, scores, row_c, a, c))
    return {"tokens": len(kl), "kl_mean": mean(kl), "kl_p99": float(np.percentile(kl, 99)) if kl else math.nan,
            "kl_median": float(np.median(kl)) if kl else math.nan, "top1_agreement": mean(top1),
            "expected_score_ref": mean(e_ref), "expected_score_cand": mean(e_cand),
            "expected_score_mad": mean(abs(a - b) for a, b in zip(e_ref, e_cand))}
