"""`python -m calibration`: build a calibration set in AITQE's input format.

    python -m calibration --model SRC --output calib.safetensors [--pairs PAIRS] [--samples 128]
        [--seed 0] [--with-answers] [--text-only]

Without --pairs, pairs come from the built-in synthetic demo world.
"""

from __future__ import annotations

import argparse
import sys
import time

from runtime.errors import InputError
from runtime.model.hub import resolve_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True,
                   help="AITQE checkpoint folder (16-bit), or a Hub model ORG/NAME[@REVISION]")
    p.add_argument("--output", required=True, help="calibration file to write (.safetensors)")
    p.add_argument("--pairs", help="pairs JSONL (id, image, caption); default: the demo world. Only its calibration "
                                   "pairs are used (calibration.split), never those bench evaluates on")
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-answers", action="store_true", help="append the model's own full answer to each prompt")
    p.add_argument("--text-only", action="store_true", help="no image embeddings (for comparison only)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error("--samples must be >= 1")
    from calibration.build import build, calibration_pairs, save  # after parsing: --help answers at once
    from runtime.model.checkpoint import fingerprint
    from runtime.scorer import Scorer

    try:
        start = time.perf_counter()
        args.model = str(resolve_model(args.model))
        scorer = Scorer.from_pretrained(args.model, device=args.device)
        pairs, source = calibration_pairs(args.pairs, args.samples, args.seed)
        cs = build(scorer, pairs, with_answers=args.with_answers, text_only=args.text_only,
                   batch_size=args.batch_size, source=source, seed=args.seed,
                   model_fingerprint=fingerprint(args.model))
        save(cs, args.output)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    lengths = [len(ids) + (0 if img is None else img.shape[0]) for img, ids in zip(cs.image_embeds, cs.token_ids)]
    print(f"wrote {args.output}: {len(cs)} samples ({cs.provenance['skipped_count']} skipped), "
          f"{min(lengths)}-{max(lengths)} tokens each, {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
