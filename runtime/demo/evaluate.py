"""Evaluate a model on held-out synthetic pairs: `python -m runtime.demo.evaluate [--model DIR]`.

Scores `--pairs` examples of the demo world (seed `--seed`, never used in training) with the full
output, against the world's rule-based verdicts, and prints: JSON validity, overall-score exact
and within-1 accuracy, Spearman correlation, per-sub-score accuracy, recaption exact match and
token F1, and the share of images whose true caption scores above a wrong caption of the same
image (scored in the default stop-at-Overall mode).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from runtime.demo import DEMO_MODEL
from runtime.demo.world import ASPECTS, IMAGE_SIZE, caption_for, make_example
from runtime.scorer import Pair, Scorer

WRONG = ("wrong_colour", "wrong_shape", "wrong_count", "wrong_position", "vague", "unrelated")


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


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(x):
        x = np.asarray(x, dtype=float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # average ranks of ties
            r[x == v] = r[x == v].mean()
        return r
    if len(a) < 2:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def held_out_pairs(n: int, seed: int, size: int = IMAGE_SIZE) -> list[Pair]:
    """Pairs 0..n-1 of the demo world `seed` (the demo model trained on seed 0), rendered at `size`
    (the model's input size, so no resampling), numbered as their id."""
    return [Pair(e.image, e.caption, i) for i, e in enumerate(make_example(seed, i, size) for i in range(n))]


def evaluate(scorer: Scorer, *, n: int, seed: int, batch_size: int, quiet: bool = False) -> dict:
    exs = [make_example(seed, i, scorer.image_spec.size) for i in range(n)]
    verdicts = scorer.score_many([Pair(e.image, e.caption, i) for i, e in enumerate(exs)], batch_size=batch_size,
                                 output_all=True, desc="held-out pairs", quiet=quiet)
    gold = [int(e.verdict["Overall Score"].split("<")[0]) for e in exs]
    pred = [v.overall_score for v in verdicts]
    scored = [(g, p) for g, p in zip(gold, pred) if p is not None]
    sub_acc = {}
    for name in ASPECTS:
        hits = [v.sub_scores.get(name, {}).get("score") == e.verdict[f"{name} Score"] for v, e in zip(verdicts, exs)]
        sub_acc[name] = float(np.mean(hits))
    # true caption vs a wrong caption of the same image (stop-at-Overall mode)
    rng = random.Random(seed)
    wins, pairs = 0, []
    for i, e in enumerate(exs):
        pairs += [Pair(e.image, caption_for(e.scene, "exact", rng)), Pair(e.image, caption_for(e.scene, rng.choice(WRONG), rng))]
    duel = scorer.score_many(pairs, batch_size=batch_size, desc="true vs wrong", quiet=quiet)
    for t, w in zip(duel[::2], duel[1::2]):
        wins += t.overall_score is not None and (w.overall_score is None or t.overall_score > w.overall_score)
    return {
        "pairs": n, "seed": seed, "model": scorer.model_id,
        "json_valid": float(np.mean([v.parse_error is None and v.error is None for v in verdicts])),
        "overall_exact": float(np.mean([p == g for g, p in zip(gold, pred)])),
        "overall_within_1": float(np.mean([p is not None and abs(p - g) <= 1 for g, p in zip(gold, pred)])),
        "spearman": spearman(*zip(*scored)) if len(scored) > 1 else float("nan"),
        "sub_score_exact": sub_acc,
        "recaption_exact": float(np.mean([v.recaption == e.description for v, e in zip(verdicts, exs)])),
        "recaption_token_f1": float(np.mean([token_f1(v.recaption, e.description) for v, e in zip(verdicts, exs)])),
        "true_above_wrong": wins / n,
    }


def report(r: dict) -> str:
    rows = [("JSON validity", f"{r['json_valid']:.1%}"), ("overall exact", f"{r['overall_exact']:.1%}"),
            ("overall within +-1", f"{r['overall_within_1']:.1%}"), ("Spearman (overall)", f"{r['spearman']:.3f}")]
    rows += [(f"{name} exact", f"{acc:.1%}") for name, acc in r["sub_score_exact"].items()]
    rows += [("recaption exact match", f"{r['recaption_exact']:.1%}"),
             ("recaption token F1", f"{r['recaption_token_f1']:.3f}"),
             ("true caption > wrong", f"{r['true_above_wrong']:.1%}")]
    lines = [f"held-out synthetic pairs: {r['pairs']} (seed {r['seed']}), model {r['model']}"]
    lines += [f"{label:<30}{value}" for label, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.demo.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEMO_MODEL), help="checkpoint folder (default: the built-in demo model)")
    p.add_argument("--pairs", type=int, default=500)
    p.add_argument("--seed", type=int, default=1000, help="held-out world seed (training used 0)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    scorer = Scorer.from_pretrained(args.model, device=args.device)
    r = evaluate(scorer, n=args.pairs, seed=args.seed, batch_size=args.batch_size, quiet=args.quiet)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
