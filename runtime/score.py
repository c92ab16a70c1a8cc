"""`python -m runtime.score`: score one image-caption pair, or a JSONL file of pairs.

Single pair: prints one JSON verdict; exit 1 with a one-line reason on bad input.
Batch (`--input PAIRS --output OUT.jsonl`, PAIRS a .jsonl or .csv): one output record per input
line, errors included; resumable (a rerun skips the lines already recorded); Ctrl-C keeps
everything written.
Datasets (`--input SHARDS --output DIR`, SHARDS a folder, brace pattern, .tar or .parquet): one
verdicts Parquet per shard, resumable shard by shard (runtime.launch.cli).
Both batch modes are `runtime.data.run.run_batch`; only their outputs differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.data.formats import pairs_format
from runtime.data.jsonl_output import JsonlOutput
from runtime.data.records import is_shard_input
from runtime.data.run import run_batch
from runtime.defaults import DEFAULT_MAX_NEW_TOKENS, ENGINES
from runtime.demo import DEMO_MODEL
from runtime.model.hub import resolve_model
from runtime.model.locate import SCORABLE, kind_of, locate
from runtime.errors import InputError
from runtime.files import check_regular
from runtime.launch.cli import add_arguments as add_dataset_arguments, options, refuse_dataset_flags, run_dataset
from runtime.launch.model import spec_of
from runtime.quiet import quiet

if TYPE_CHECKING:  # the model code loads when a scorer is built, after parsing: --help answers at once
    from runtime.scorer import Scorer


def default_model() -> Path:
    if kind_of(DEMO_MODEL) != "checkpoint":
        raise InputError(f"no --model given and the built-in demo model is missing ({DEMO_MODEL}); "
                         "reinstall, or pass --model with an AITQE checkpoint folder")
    return DEMO_MODEL


DEMO = "demo"  # `--model demo`: the built-in demo model, asked for by name
NO_MODEL = ("no --model: the built-in demo model knows only its world of shapes, and its verdicts on other data "
            "mean nothing; pass --model ORG/NAME or a checkpoint folder, or --model demo to try the built-in "
            "demo model on this data")


def model_folder(args: argparse.Namespace) -> Path:
    """The model's folder: `--model demo` or, in single-pair mode only, no --model is the demo model."""
    if args.model == DEMO:
        return default_model()
    if args.model:
        return locate(resolve_model(args.model, quiet=args.quiet), accept=SCORABLE).root
    if args.input is not None:
        raise InputError(NO_MODEL)
    return default_model()


def is_demo(model: Path) -> bool:
    return model.resolve() == DEMO_MODEL.resolve()


def load_scorer(args: argparse.Namespace) -> Scorer:
    scorer = spec_of(args, model_folder(args), batch=args.input is not None).load()
    if args.debug:
        print(f"debug: {scorer.model_id}: {scorer.engine} engine, greedy decoding; end of generation: token ids "
              f"{list(scorer.eos.ids)} from {scorer.eos.source}; pad token id {scorer.pad_token_id}", file=sys.stderr)
    return scorer


def score_pairs_file(args: argparse.Namespace) -> int:
    """Batch mode on a pairs file (JSONL or CSV): verdicts JSONL, resumable by line."""
    path = Path(args.input)
    if not path.exists():
        raise InputError(f"--input {args.input}: no such file; pass a pairs JSONL/CSV file or a folder of shards")
    check_regular(path, f"--input {args.input}")
    opts = options(args, is_demo(model_folder(args)))
    shard = pairs_format(path).shard(path)
    return run_batch(lambda: load_scorer(args), [shard], JsonlOutput(opts.output, opts), opts)


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
    p.add_argument("--model", help="AITQE checkpoint folder, bundle, or GGUF export (llama.cpp runs it), or a "
                                   "Hugging Face Hub model ORG/NAME[@REVISION] (fetched into its cache; HF_HOME, "
                                   "HF_HUB_OFFLINE); demo: the built-in demo model (the default for a single pair; "
                                   "batch modes need --model)")
    p.add_argument("--output-all", action="store_true", help="generate all sub-scores, not just up to the overall score")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--batch-size", type=int, default=8,
                   help="pairs decoded together (the fast engine's slots) and per vision-tower batch")
    p.add_argument("--engine", choices=ENGINES, default="fast",
                   help="fast: static KV cache, continuous batching (default); reference: transformers' generate; "
                        "a GGUF export always runs on llama.cpp")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="compile the fast engine's decode step (auto: in batch mode on CUDA for a 16-bit backbone)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that read and preprocess images ahead of the model (batch mode; default: "
                        "2 on CUDA, 0 (none) on CPU)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                   help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--vision-backend", choices=["torch", "onnx"], default=None,
                   help="run the vision encoder with PyTorch or onnxruntime (default: as the bundle's manifest says; "
                        "a GGUF export: clip.cpp, or with this its own tower from --with-vision)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the tokenizer's own Python code to run (off by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no library warnings: stderr holds "
                                                        "errors and the summary only")
    p.add_argument("--debug", action="store_true",
                   help="say on stderr how the model decodes (end-of-generation ids and the file they came from)")
    p.add_argument("--threads", type=int, default=None,
                   help="a GGUF export: threads for llama.cpp and clip.cpp (default: llama.cpp's choice)")
    p.add_argument("--gpu-layers", type=int, default=0,
                   help="a GGUF export: language-model layers llama.cpp offloads to the GPU of a CUDA/Metal "
                        "build of llama-cpp-python (default 0; -1: all)")
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
    if args.max_new_tokens < 1 or args.batch_size < 1 or (args.workers or 0) < 0 or (args.threads or 1) < 1:
        p.error("--max-new-tokens, --batch-size and --threads must be >= 1, --workers >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with quiet(args.quiet):  # before the libraries load: some read their settings once, at import
        return run(args)


def run(args: argparse.Namespace) -> int:
    """The parsed command, its exit code; every failure one line on stderr."""
    try:
        if args.input and is_shard_input(args.input):
            model = model_folder(args)
            return run_dataset(args, model, is_demo(model))
        refuse_dataset_flags(args)
        return score_pairs_file(args) if args.input else run_single(load_scorer(args), args)
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
