"""`python -m runtime.score`: score one image-caption pair, or a JSONL file of pairs.

Single pair: prints one JSON verdict; exit 1 with a one-line reason on bad input.
Batch (`--input PAIRS --output OUT.jsonl`, PAIRS a .jsonl or .csv): one output record per input
line, errors included; resumable (a rerun skips the lines already recorded); Ctrl-C keeps
everything written.
Datasets (`--input SHARDS --output DIR`, SHARDS a folder, brace pattern, .tar or .parquet): one
verdicts Parquet per shard, resumable shard by shard (runtime.launch.cli).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from runtime.data.csv_table import read_rows as read_csv_rows
from runtime.data.records import is_shard_input
from runtime.demo import DEMO_MODEL
from runtime.errors import InputError
from runtime.files import check_regular
from runtime.launch.cli import add_arguments as add_dataset_arguments, refuse_dataset_flags, run_dataset
from runtime.lock import output_lock
from runtime.pairs import RecordWriter, done_lines, read_pairs
from runtime.scorer import DEFAULT_MAX_NEW_TOKENS, ENGINES, Pair, Scorer, Verdict


def default_model() -> Path:
    if not (DEMO_MODEL / "config.json").is_file():
        raise InputError(f"no --model given and the built-in demo model is missing ({DEMO_MODEL}); "
                         "reinstall, or pass --model with an AITQE checkpoint folder")
    return DEMO_MODEL


def load_scorer(args: argparse.Namespace) -> Scorer:
    path = Path(args.model) if args.model else default_model()
    if not path.is_dir():
        raise InputError(f"--model {path}: not a folder; pass an AITQE checkpoint folder")
    return Scorer.from_pretrained(path, device=args.device, dtype=args.dtype,
                                  trust_remote_code=args.trust_remote_code, vision_backend=args.vision_backend,
                                  engine=args.engine, slots=args.batch_size,
                                  compile={"auto": None if args.input else False, "on": True, "off": False}[args.compile])


def score_rows(scorer: Scorer, rows: list, args: argparse.Namespace) -> list[Verdict]:
    """Score rows as one batch; if the model fails on it, pair by pair, recording each failure."""
    if not rows:
        return []
    try:
        return scorer.score_batch([Pair(r.image, r.caption, r.id) for r in rows],
                                  output_all=args.output_all, max_new_tokens=args.max_new_tokens)
    except RuntimeError as e:  # e.g. out of memory on this batch
        if len(rows) > 1:
            return [v for r in rows for v in score_rows(scorer, [r], args)]
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [Verdict(id=rows[0].id, model=scorer.model_id, error=f"model failed on this pair: {reason}")]


def score_stream(scorer: Scorer, rows: list, args: argparse.Namespace) -> Iterator[tuple[object, Verdict]]:
    """(row, verdict) for each good row, in order, streamed; if the model fails mid-stream (e.g. out of
    memory), the rest go batch by batch, each failure recorded for its pairs."""
    done = 0
    try:
        verdicts = scorer.score_stream((Pair(r.image, r.caption, r.id) for r in rows), batch_size=args.batch_size,
                                       workers=args.workers, output_all=args.output_all,
                                       max_new_tokens=args.max_new_tokens)
        for row, v in zip(rows, verdicts):
            yield row, v
            done += 1
        return
    except RuntimeError as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"warning: the model failed while streaming ({reason}); going on batch by batch", file=sys.stderr)
    rest = iter(rows[done:])
    while batch := list(islice(rest, args.batch_size)):
        yield from zip(batch, score_rows(scorer, batch, args))


def run_batch(scorer: Scorer, args: argparse.Namespace) -> int:
    output = Path(args.output)
    with output_lock(output):
        return _run_batch_locked(scorer, args, output)


def _run_batch_locked(scorer: Scorer, args: argparse.Namespace, output: Path) -> int:
    from tqdm import tqdm

    done = done_lines(output)
    read = read_csv_rows if args.input.lower().endswith(".csv") else read_pairs
    rows = [r for r in read(args.input) if r.line not in done]
    good = score_stream(scorer, [r for r in rows if not r.error], args)
    writer = RecordWriter(output)
    failed = 0
    try:
        with tqdm(total=len(rows) + len(done), initial=len(done), unit="pair", file=sys.stderr,
                  disable=args.quiet) as bar:
            for r in rows:
                if r.error:
                    record = {"id": r.id, "line": r.line, "error": r.error}
                else:
                    _, v = next(good)
                    record = {**v.to_dict(), "line": r.line}
                writer.write([record])
                failed += record["error"] is not None
                bar.update(1)
    finally:
        writer.close()
    print(f"{len(rows)} pairs scored into {output} ({failed} with errors, {len(done)} already done)",
          file=sys.stderr)
    return 0


def run_single(scorer: Scorer, args: argparse.Namespace) -> int:
    verdict = scorer.score(args.image, args.caption, output_all=args.output_all,
                           max_new_tokens=args.max_new_tokens)
    if verdict.error:
        raise InputError(verdict.error)
    print(json.dumps(verdict.to_dict(), ensure_ascii=False))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.score", description=__doc__.splitlines()[0])
    p.add_argument("--image", help="image file (single-pair mode)")
    p.add_argument("--caption", help="caption text (single-pair mode)")
    p.add_argument("--input", help="pairs JSONL/CSV with id, image, caption (batch mode), or shards: a folder, "
                                   "a brace pattern, a .tar or a .parquet")
    p.add_argument("--output", help="verdicts JSONL to write or resume (batch mode); a folder for shards")
    p.add_argument("--model", help="AITQE checkpoint folder or bundle (default: the built-in demo model)")
    p.add_argument("--output-all", action="store_true", help="generate all sub-scores, not just up to the overall score")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--batch-size", type=int, default=8,
                   help="pairs decoded together (the fast engine's slots) and per vision-tower batch")
    p.add_argument("--engine", choices=ENGINES, default="fast",
                   help="fast: static KV cache, continuous batching (default); reference: transformers' generate")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="compile the fast engine's decode step (auto: in batch mode on CUDA for a 16-bit backbone)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that read and preprocess images ahead of the model (batch mode; default 0: none)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                   help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--vision-backend", choices=["torch", "onnx"], default=None,
                   help="run the vision encoder with PyTorch or onnxruntime (default: as the bundle's manifest says)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the tokenizer's own Python code to run (off by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true",
                   help="say on stderr how the model decodes (end-of-generation ids and the file they came from)")
    add_dataset_arguments(p)
    args = p.parse_args(argv)
    single = args.image is not None or args.caption is not None
    batch = args.input is not None or args.output is not None
    if single == batch:
        p.error("give either --image and --caption, or --input and --output")
    if single and (args.image is None or args.caption is None):
        p.error("single-pair mode needs both --image and --caption")
    if batch and (args.input is None or args.output is None):
        p.error("batch mode needs both --input and --output")
    if args.max_new_tokens < 1 or args.batch_size < 1 or args.workers < 0:
        p.error("--max-new-tokens and --batch-size must be >= 1, --workers >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.input and is_shard_input(args.input):
            return run_dataset(args, Path(args.model) if args.model else default_model())
        refuse_dataset_flags(args)
        if args.input and not Path(args.input).exists():
            raise InputError(f"--input {args.input}: no such file; pass a pairs JSONL/CSV file or a folder of shards")
        if args.input:
            check_regular(args.input, f"--input {args.input}")
        scorer = load_scorer(args)
        if args.debug:
            print(f"debug: {scorer.model_id}: {scorer.engine} engine, greedy decoding; end of generation: token ids {list(scorer.eos.ids)} "
                  f"from {scorer.eos.source}; pad token id {scorer.pad_token_id}", file=sys.stderr)
        return run_batch(scorer, args) if args.input else run_single(scorer, args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: everything already written is kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as e:  # never a traceback on the user's screen (--debug shows it)
        if args.debug:
            raise
        reason = " ".join(str(e).split())[:300] or "no message"
        print(f"error: unexpected {type(e).__name__}: {reason}; everything already written is kept; "
              "rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
