"""Memory over a long stream: `python -m bench.soak [--model DIR] [--pairs 5000] [--batch-size 8]`.

Streams demo-world pairs (images made in memory) through `Scorer.score_stream`, the path batch
mode runs, and prints one JSON object: the process's peak memory (RSS on CPU, the CUDA allocator
on CUDA) after the first `--window` pairs and at the end, and the resident size at both points.
A steady engine ends where it started: no per-pair state is kept once a verdict is out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from calibration.split import demo_id
from runtime.demo import DEMO_MODEL
from runtime.demo.world import IMAGE_SIZE, make_example
from runtime.defaults import ENGINES, default_device


def memory(device: str) -> dict:
    from bench.cost import proc_status

    out = {"rss_mib": proc_status("VmRSS") / 2**20, "peak_rss_mib": proc_status("VmHWM") / 2**20}
    if device.startswith("cuda"):
        import torch

        out |= {"cuda_allocated_mib": torch.cuda.memory_allocated() / 2**20,
                "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEMO_MODEL))
    p.add_argument("--pairs", type=int, default=5000)
    p.add_argument("--window", type=int, default=200, help="pairs after which the first reading is taken")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--engine", choices=ENGINES, default="fast")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    args = p.parse_args(argv)
    args.device = args.device or default_device()
    from runtime.scorer import Pair, Scorer  # after parsing: --help answers at once

    scorer = Scorer.from_pretrained(args.model, device=args.device, engine=args.engine, slots=args.batch_size)

    def pairs():
        for i in range(args.pairs):
            e = make_example(2, i, IMAGE_SIZE)
            yield Pair(e.image, e.caption, demo_id(2, i))

    readings, errors, start = {}, 0, time.perf_counter()
    for n, v in enumerate(scorer.score_stream(pairs(), batch_size=args.batch_size), 1):
        errors += v.error is not None
        if n in (args.window, args.pairs):
            readings[str(n)] = memory(args.device)
            print(f"{n} pairs: {readings[str(n)]}", file=sys.stderr, flush=True)
    print(json.dumps({"model": args.model, "engine": scorer.engine, "device": args.device, "pairs": args.pairs,
                      "errors": errors, "seconds": round(time.perf_counter() - start, 1), "memory": readings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
