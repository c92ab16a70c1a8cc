"""`python -m bench.demo [--model DIR]`: the demo model against its world's own rules (bench.eval.demo)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.eval.pairs import DEMO_SEED
from runtime.demo import DEMO_MODEL
from runtime.atomic import write_text
from runtime.errors import InputError
from runtime.model.hub import resolve_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.demo", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEMO_MODEL),
                   help="checkpoint or bundle, or a Hub model ORG/NAME[@REVISION] (default: the built-in demo model)")
    p.add_argument("--pairs", type=int, default=500)
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="demo-world seed (the demo model trained on 0)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error("--pairs must be >= 1")
    try:  # after parsing: --help answers at once
        from bench.eval.demo import evaluate, report
    except ImportError as e:  # scipy, rouge-score
        sys.exit(f"error: python -m bench.demo needs {e.name}; install it with: pip install -e '.[bench]'")
    from runtime.scorer import Scorer

    try:
        r = evaluate(Scorer.from_pretrained(resolve_model(args.model), device=args.device), n=args.pairs,
                     seed=args.seed, batch_size=args.batch_size, quiet=args.quiet)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report(r))
    if args.json:
        write_text(Path(args.json), json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
