"""The demo model against its world's own rules: `python -m bench.demo [--model DIR]`.

Scores `--pairs` evaluation pairs of the demo world (seed `--seed`, never used in training; only
ids in the evaluation split of `calibration.split`) with the full output, against the world's
rule-based verdicts, and reports: JSON validity, overall-score exact and within-1 accuracy,
Spearman correlation, per-sub-score accuracy, recaption exact match and token F1, and the share of
images whose true caption scores above a wrong caption of the same image (scored in the default
stop-at-Overall mode). The gold verdicts play the reference's part in `bench.eval.metrics`.
"""

from __future__ import annotations

import random

from scipy.stats import spearmanr

from bench.eval.metrics import agreement, correlation, mean, token_f1, within_1
from calibration.split import demo_examples
from runtime.demo.world import ASPECTS, caption_for
from runtime.scorer import Pair, Scorer

WRONG = ("wrong_colour", "wrong_shape", "wrong_count", "wrong_position", "vague", "unrelated")


def evaluate(scorer: Scorer, *, n: int, seed: int, batch_size: int, quiet: bool = False) -> dict:
    examples = demo_examples(n, seed, "evaluation", scorer.image_spec.size)
    exs = [e for _, e in examples]
    pairs = [Pair(e.image, e.caption, pair_id) for pair_id, e in examples]
    verdicts = scorer.score_many(pairs, batch_size=batch_size, output_all=True, desc="held-out pairs", quiet=quiet)
    gold = [int(e.verdict["Overall Score"].split("<")[0]) for e in exs]
    pred = [v.overall_score for v in verdicts]
    scored = [(g, p) for g, p in zip(gold, pred) if p is not None]
    sub_acc = {name: mean(v.sub_scores.get(name, {}).get("score") == e.verdict[f"{name} Score"]
                          for v, e in zip(verdicts, exs)) for name in ASPECTS}
    rng = random.Random(seed)  # true caption vs a wrong caption of the same image (stop-at-Overall mode)
    duel = []
    for e in exs:
        duel += [Pair(e.image, caption_for(e.scene, "exact", rng)), Pair(e.image, caption_for(e.scene, rng.choice(WRONG), rng))]
    duel = scorer.score_many(duel, batch_size=batch_size, desc="true vs wrong", quiet=quiet)
    wins = [t.overall_score is not None and (w.overall_score is None or t.overall_score > w.overall_score)
            for t, w in zip(duel[::2], duel[1::2])]
    return {
        "pairs": n, "seed": seed, "model": scorer.model_id,
        "json_valid": mean(v.parse_error is None and v.error is None for v in verdicts),
        "overall_exact": agreement(gold, pred), "overall_within_1": within_1(gold, pred),
        "spearman": correlation(spearmanr, *zip(*scored)) if len(scored) > 1 else float("nan"),
        "sub_score_exact": sub_acc,
        "recaption_exact": mean(v.recaption == e.description for v, e in zip(verdicts, exs)),
        "recaption_token_f1": mean(token_f1(v.recaption, e.description) for v, e in zip(verdicts, exs)),
        "true_above_wrong": mean(wins),
        "kinds": {kind: mean(p == g for p, g, e in zip(pred, gold, exs) if e.kind == kind)
                  for kind in sorted({e.kind for e in exs})},
    }


def report(r: dict) -> str:
    rows = [("JSON validity", f"{r['json_valid']:.1%}"), ("overall exact", f"{r['overall_exact']:.1%}"),
            ("overall within +-1", f"{r['overall_within_1']:.1%}"), ("Spearman (overall)", f"{r['spearman']:.3f}")]
    rows += [(f"{name} exact", f"{acc:.1%}") for name, acc in r["sub_score_exact"].items()]
    rows += [("recaption exact match", f"{r['recaption_exact']:.1%}"),
             ("recaption token F1", f"{r['recaption_token_f1']:.3f}"),
             ("true caption > wrong", f"{r['true_above_wrong']:.1%}")]
    rows += [(f"overall exact, {kind}", f"{acc:.1%}") for kind, acc in r["kinds"].items()]
    lines = [f"demo-world evaluation pairs: {r['pairs']} (seed {r['seed']}), model {r['model']}"]
    lines += [f"{label:<40}{value}" for label, value in rows]
    return "\n".join(lines)
