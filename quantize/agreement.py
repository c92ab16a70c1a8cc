"""How close quantized bundles stay to the 16-bit model: `python -m quantize.agreement`.

    python -m quantize.agreement --reference SRC --bundles B1 [B2 ...] [--pairs 200] [--seed 1000]

Scores held-out demo-world pairs (world seed --seed; the demo model trained on seed 0) with the
reference (a checkpoint or a bf16/fp16 bundle, computed in --reference-dtype: fp32 by default, which
evaluates 16-bit weights exactly) and with every bundle, in the default stop-at-Overall mode, and
prints one row per bundle: method, compute dtype, bits per backbone weight, bundle MiB, quantize
wall time, overall-score agreement with the reference (exact and within 1), and the backbone's
per-layer signal-to-noise ratio (hidden states of both backbones on the same input embeddings; the
lowest layer is shown). The full benchmark is `python -m bench`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from quantize.bundle import bundle_bytes
from runtime.demo.evaluate import held_out_pairs
from runtime.errors import InputError
from runtime.scorer import DEFAULT_MAX_NEW_TOKENS, Pair, Scorer


def overall_scores(scorer: Scorer, pairs: list[Pair], batch_size: int, desc: str) -> list[int | None]:
    return [v.overall_score for v in scorer.score_many(pairs, batch_size=batch_size, desc=desc)]


@torch.inference_mode()
def prompt_embeddings(scorer: Scorer, pairs: list[Pair]) -> list[torch.Tensor]:
    """The backbone's input rows (image embeddings + prompt), one per pair, from `scorer`'s vision side,
    with the caption cut as for generation."""
    prepared = [scorer.prepare(p, DEFAULT_MAX_NEW_TOKENS) for p in pairs]
    return scorer.embed_prompts([rgb for rgb, _, _ in prepared], [ids for _, ids, _ in prepared])


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


def agreement(ref: list[int | None], cand: list[int | None]) -> tuple[float, float]:
    exact = sum(a == b for a, b in zip(ref, cand)) / len(ref)
    within = sum(a is not None and b is not None and abs(a - b) <= 1 for a, b in zip(ref, cand)) / len(ref)
    return exact, within


def compare(reference: Scorer, bundles: list[Path], pairs: list[Pair], batch_size: int, snr_pairs: int) -> dict:
    ref_scores = overall_scores(reference, pairs, batch_size, "reference")
    rows = prompt_embeddings(reference, pairs[:snr_pairs])
    results = []
    for path in bundles:
        manifest = json.loads((path / "manifest.json").read_text())
        cand = Scorer.from_pretrained(path, device="cpu")
        exact, within = agreement(ref_scores, overall_scores(cand, pairs, batch_size, path.name))
        snr = layer_snr(reference.llm, cand.llm, rows)
        results.append({
            "bundle": str(path), "method": manifest["backbone"]["method"],
            "bits_per_weight": manifest["backbone"]["bits_per_weight"],
            "calibration": manifest["backbone"]["params"].get("calibration"),
            "compute_dtype": str(cand.llm.get_input_embeddings().weight.dtype).removeprefix("torch."),
            "bundle_mib": bundle_bytes(path) / 2**20, "quantize_seconds": manifest.get("quantize_seconds"),
            "overall_agreement": exact, "within_1": within, "layer_snr_db": snr,
        })
    return {"pairs": len(pairs), "reference_scored": sum(s is not None for s in ref_scores), "bundles": results}


def calibration_label(cal: dict | None) -> str:
    if not cal:
        return "-"
    return ("text-only" if cal.get("text_only") else "multimodal") + f" ({cal.get('source', '?')})"


def table(r: dict) -> str:
    lines = ["| bundle | method | compute | calibration | bits/weight | bundle MiB | quantize s | agreement | within 1 | min layer SNR dB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for b in r["bundles"]:
        secs = b["quantize_seconds"]
        lines.append(f"| {Path(b['bundle']).name} | {b['method']} | {b['compute_dtype']} | {calibration_label(b['calibration'])} | "
                     f"{b['bits_per_weight']:.2f} | {b['bundle_mib']:.1f} | {'-' if secs is None else f'{secs:.1f}'} | "
                     f"{b['overall_agreement']:.1%} | {b['within_1']:.1%} | {min(b['layer_snr_db']):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize.agreement", description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="16-bit checkpoint folder or bf16/fp16 bundle")
    p.add_argument("--bundles", nargs="+", required=True, help="bundle folders from python -m quantize")
    p.add_argument("--pairs", type=int, default=200, help="held-out demo-world pairs")
    p.add_argument("--seed", type=int, default=1000, help="held-out world seed (the demo model trained on 0)")
    p.add_argument("--reference-dtype", choices=["bf16", "fp16", "fp32"], default="fp32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--snr-pairs", type=int, default=16, help="pairs whose hidden states give the layer SNR")
    p.add_argument("--json", help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    try:
        if args.pairs < 1:
            raise InputError(f"--pairs {args.pairs}: give at least 1")
        bundles = [Path(b) for b in args.bundles]
        for b in bundles:
            if not (b / "manifest.json").is_file():
                raise InputError(f"--bundles {b}: not a bundle (no manifest.json); make one with python -m quantize")
        reference = Scorer.from_pretrained(args.reference, device="cpu", dtype=args.reference_dtype)
        r = compare(reference, bundles, held_out_pairs(args.pairs, args.seed, reference.image_spec.size),
                    args.batch_size, args.snr_pairs)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{r['pairs']} held-out pairs (seed {args.seed}); reference {args.reference} ({args.reference_dtype}), "
          f"overall score parsed for {r['reference_scored']}")
    print(table(r))
    if args.json:
        Path(args.json).write_text(json.dumps({"reference": args.reference, "seed": args.seed, **r}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
