"""Pairs per second from WebDataset shards with 0, 1 and 2 reader workers: `python -m bench.shards`.

    python -m bench.shards [--model DIR] [--shards 4] [--pairs 48] [--image-size 48 256] [--workers 0 1 2]

Writes demo-world shards (img2dataset layout, JPEG images of each --image-size) into a temporary
folder, then scores them the way `python -m runtime.score --input SHARDS` does
(`runtime.data.run.score_shard`: tar reader -> `Scorer.score_stream(workers=N)` -> verdict rows)
and times the whole pass: reading, decoding, preprocessing, model. One untimed warm-up pass first
(it also starts the worker processes' imports once), then --repeats timed passes; the median is
printed, with the spread. Reader workers are spawned processes that decode and preprocess images
ahead of the model; on a small model on the CPU they compete with it for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from runtime.data.records import find_shards
from runtime.data.run import RunOptions, score_shard
from runtime.demo import DEMO_MODEL
from runtime.demo.shards import pairs, write_webdataset
from runtime.scorer import Scorer


def time_pass(scorer: Scorer, shards, opts: RunOptions) -> tuple[float, int, int]:
    """(seconds, rows, rows with errors) of one pass over the shards."""
    start = time.perf_counter()
    rows = [r for s in shards for r in score_shard(scorer, s, opts, "bench")]
    return time.perf_counter() - start, len(rows), sum(r["error"] is not None for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEMO_MODEL))
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--pairs", type=int, default=48, help="pairs per shard")
    p.add_argument("--image-size", type=int, nargs="+", default=[48, 256])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    scorer = Scorer.from_pretrained(args.model, device="cpu")
    results = []
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, model {Path(args.model).name}, batch {args.batch_size}, "
          f"{args.shards} shards x {args.pairs} pairs", file=sys.stderr)
    print("| image px | reader workers | pairs/s (median) | spread | pairs | errors |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.image_size:
            folder = Path(tmp) / f"px{size}"
            for s in range(args.shards):
                write_webdataset(folder, s, pairs(s, args.pairs, size=size))
            shards = find_shards(str(folder))
            for workers in args.workers:
                opts = RunOptions(output=Path(tmp), batch_size=args.batch_size, workers=workers)
                time_pass(scorer, shards[:1], opts)  # warm-up
                runs = [time_pass(scorer, shards, opts) for _ in range(args.repeats)]
                rates = [n / sec for sec, n, _ in runs]
                row = {"image_px": size, "workers": workers, "pairs_per_s": statistics.median(rates),
                       "min": min(rates), "max": max(rates), "pairs": runs[0][1], "errors": runs[0][2]}
                results.append(row)
                print(f"| {size} | {workers} | {row['pairs_per_s']:.1f} | {row['min']:.1f}-{row['max']:.1f} | "
                      f"{row['pairs']} | {row['errors']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
