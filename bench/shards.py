"""Pairs per second from WebDataset shards with 0, 1 and 2 reader workers: `python -m bench.shards`.

    python -m bench.shards [--model DIR] [--shards 4] [--pairs 48] [--image-size 48 256] [--workers 0 1 2]

Writes demo-world shards (img2dataset layout, JPEG images of each --image-size) into a temporary
folder, then scores them the way `python -m runtime.score --input SHARDS` does
(`runtime.data.stream.score_records`: tar reader -> one `Scorer.score_stream(workers=N)` -> verdicts): reading, decoding, preprocessing, model. One untimed warm-up pass on one shard, then
--repeats rounds of one timed pass per setting, the settings taken in turn (round robin) so that
load from other processes on the machine falls on all of them alike. Each pass starts its reader workers anew (spawned processes that import
torch: seconds), as each run of the CLI does once, so two rates are printed: steady (pairs of
shards 2..n over the time from the end of shard 1 to the end of the last, i.e. with the workers
running) and whole pass (worker start included); medians of the passes, with the steady spread. Reader workers are spawned processes that decode and preprocess images
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
from typing import TYPE_CHECKING

from runtime.atomic import write_text
from runtime.data.formats import read_records
from runtime.data.records import find_shards
from runtime.data.run import RunOptions
from runtime.data.stream import score_records
from runtime.demo import DEMO_MODEL
from runtime.demo.shards import pairs, write_webdataset

if TYPE_CHECKING:
    from runtime.scorer import Scorer


def time_pass(scorer: Scorer, shards, opts: RunOptions) -> dict:
    """One pass over the shards as the CLI makes it (one stream): the whole pass's pairs/s (worker
    start included) and the steady pairs/s from the first shard's end to the last's."""
    start = time.perf_counter()
    ends, counts, errors = [], [0], 0
    for event in score_records(scorer, [(s, read_records(s, opts)) for s in shards], opts):
        if event.record is None:  # a shard's end
            ends.append(time.perf_counter())
            counts.append(0)
            continue
        counts[-1] += 1
        errors += (event.record.error if event.verdict is None else event.verdict.error) is not None
    total = sum(counts)
    steady = sum(counts[1:]) / (ends[-1] - ends[0]) if len(ends) > 1 else None
    return {"whole": total / (ends[-1] - start), "steady": steady, "pairs": total, "errors": errors}


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
    import torch  # after parsing: --help answers at once

    from runtime.scorer import Scorer

    scorer = Scorer.from_pretrained(args.model, device="cpu")
    results = []
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, model {Path(args.model).name}, batch {args.batch_size}, "
          f"{args.shards} shards x {args.pairs} pairs", file=sys.stderr)
    print("| image px | reader workers | steady pairs/s (median) | spread | whole pass pairs/s (worker start included) "
          "| pairs | errors |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        configs = []
        for size in args.image_size:
            folder = Path(tmp) / f"px{size}"
            for s in range(args.shards):
                write_webdataset(folder, s, pairs(s, args.pairs, size=size))
            configs += [(size, w, find_shards(str(folder))) for w in args.workers]
        opts = {w: RunOptions(output=Path(tmp), batch_size=args.batch_size, workers=w) for w in args.workers}
        time_pass(scorer, configs[0][2][:1], opts[0])  # warm-up
        runs: dict = {(size, w): [] for size, w, _ in configs}
        for _ in range(args.repeats):  # round robin: load from other processes hits every setting alike
            for size, w, shards in configs:
                runs[size, w].append(time_pass(scorer, shards, opts[w]))
        for (size, workers), got in runs.items():
            steady, whole = [r["steady"] for r in got], [r["whole"] for r in got]
            row = {"image_px": size, "workers": workers, "steady_pairs_per_s": statistics.median(steady),
                   "steady_min": min(steady), "steady_max": max(steady),
                   "whole_pass_pairs_per_s": statistics.median(whole), "pairs": got[0]["pairs"],
                   "errors": got[0]["errors"]}
            results.append(row)
            print(f"| {size} | {workers} | {row['steady_pairs_per_s']:.1f} | {min(steady):.1f}-{max(steady):.1f} | "
                  f"{row['whole_pass_pairs_per_s']:.1f} | {row['pairs']} | {row['errors']} |", flush=True)
    if args.json:
        write_text(Path(args.json), json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
