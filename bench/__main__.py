"""Every variant against the 16-bit model, in one run: `python -m bench`.

    python -m bench --reference SRC --candidates BUNDLE [BUNDLE ...] [--pairs demo:200 | PAIRS.jsonl] --output DIR
    python -m bench --synthetic full|reduced|tiny [--methods bf16,bnb-int8,bnb-nf4,gptq-int4] --output DIR

With real models, on the evaluation pairs (`bench.eval.pairs`; a candidate calibrated on any of them
is refused): the reference (a 16-bit checkpoint or bf16/fp16 bundle) and each candidate write whole
verdicts (accuracy, `bench.eval`), then each variant's cost is measured in a process of its own
(`bench.cost`, which times `Scorer.score_batch` and `Scorer.score_stream`, the paths `python -m
runtime.score` runs), the first variant with every engine of --engines (fast vs reference). With
--synthetic, random-weight bundles of a published shape give the cost columns only. The machine's
copy bandwidth and matmul throughput are measured in the same run. Writes DIR/report.md,
DIR/results.json (rewritten after every step, so an interrupted run keeps what it measured) and PNG
plots, and prints the summary table last.
"""

from __future__ import annotations

import argparse
import sys

from runtime.defaults import DTYPE_NAMES, ENGINES, default_device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--reference", help="16-bit AITQE checkpoint or bf16/fp16 bundle")
    p.add_argument("--candidates", nargs="+", default=[],
                   help="bundles from python -m quantize, GGUF exports (python -m quantize.export --format gguf)")
    p.add_argument("--pairs", default="demo:200", help="pairs JSONL (id, image, caption) or demo:N (default demo:200); "
                                                       "only its evaluation split is used")
    p.add_argument("--limit", type=int, help="use at most this many pairs of a JSONL file")
    p.add_argument("--synthetic", choices=["full", "reduced", "tiny"], help="random-weight bundles, cost only")
    p.add_argument("--methods", default="bf16,bnb-int8,bnb-nf4,gptq-int4", help="with --synthetic")
    p.add_argument("--output", required=True, help="folder for report.md, results.json and plots")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--reference-dtype", choices=DTYPE_NAMES,
                   help="compute type of the reference for accuracy (default: fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of the accuracy runs")
    p.add_argument("--batch-sizes", help="batch sizes of the cost runs (default 1,4,16 on CPU, 1,8,32,64 on CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each cost measurement")
    p.add_argument("--snr-pairs", type=int, default=16, help="pairs whose hidden states give the layer SNR")
    p.add_argument("--enhance-below", type=int, default=6, help="replace the caption when the overall score is below this")
    p.add_argument("--engines", default="fast,reference",
                   help="decode engines to time: the first for every variant, all of them for the first variant")
    p.add_argument("--stream-pairs", type=int, help="pairs streamed per batch size for pairs/s (default 4 x the largest batch)")
    p.add_argument("--no-cost", action="store_true", help="accuracy only (real models)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    if not args.synthetic and not (args.reference and args.candidates):
        p.error("give --reference and --candidates, or --synthetic")
    args.device = args.device or default_device()
    args.batch_sizes = args.batch_sizes or ("1,8,32,64" if args.device == "cuda" else "1,4,16")
    args.engines = args.engines.split(",")
    if set(args.engines) - set(ENGINES):
        p.error(f"--engines: use some of {', '.join(ENGINES)}")
    args.stream_pairs = args.stream_pairs or 4 * max(int(b) for b in args.batch_sizes.split(","))
    if args.device == "cuda" and default_device() != "cuda":
        p.error("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    from bench.run import run  # after parsing: --help answers at once

    return run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
