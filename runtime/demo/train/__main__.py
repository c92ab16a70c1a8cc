"""`python -m runtime.demo.train --output DIR`: train the built-in demo model (see the package docstring)."""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime.demo.world import KINDS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.demo.train", description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True, help="checkpoint folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary size (special tokens come on top)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--init", help="continue training this checkpoint (its weights and tokenizer)")
    p.add_argument("--kind-weights", help="caption-kind mix, e.g. exact:2,wrong_colour:3 (default: the world's)")
    p.add_argument("--aux-weight", type=float, default=0.0,
                   help="weight of the training-only scene probe's loss (supervises the vision tower directly)")
    p.add_argument("--vision-steps", type=int, default=0,
                   help="steps that train the tower with the scene probe alone before the joint training")
    p.add_argument("--check-weight", type=float, default=0.0,
                   help="weight of the training-only caption check's losses (is each claim of the caption "
                        "true? attention routed to what that needs)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    weights = None
    if args.kind_weights:
        weights = {k: float(v) for k, v in (item.split(":") for item in args.kind_weights.split(","))}
        unknown = set(weights) - set(KINDS)
        if unknown:
            p.error(f"unknown caption kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    import torch  # after parsing: --help answers at once

    from runtime.demo.train.loop import train

    if args.threads:
        torch.set_num_threads(args.threads)
    train(Path(args.output), seed=args.seed, steps=args.steps, batch=args.batch_size, lr=args.lr,
          vocab=args.vocab, log_every=args.log_every, init=Path(args.init) if args.init else None,
          kind_weights=weights, aux_weight=args.aux_weight, vision_steps=args.vision_steps,
          check_weight=args.check_weight, device=args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
