"""`python -m runtime.score --input SHARDS --output DIR ...`: the dataset flags, the batch options, and
where a shard run goes.

SHARDS is a folder, a brace pattern, a comma list or one shard file of a registered format
(`runtime.data.formats`); DIR gets one `SHARD.aitqe.parquet` per shard. Runs here on this process's
share of the shards (`--shard-index i --num-shards n`, one process per GPU, through
`runtime.data.run.run_batch`) or on Ray (`--ray`). The enhanced copy's rules are
`runtime.data.enhance`'s, the keep list's `runtime.data.keep`'s (also `python -m runtime.select`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime.data import limits
from runtime.data.keep import FORMATS, check_outside
from runtime.data.parquet_table import Columns
from runtime.data.records import find_shards, pick
from runtime.data.run import RunOptions, run_batch
from runtime.data.shard_output import ShardOutput
from runtime.errors import InputError
from runtime.launch.model import cached_loader, model_fingerprint, spec_of
from runtime.model.locate import SCORABLE, locate


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("datasets (--input a folder, brace pattern, .tar or .parquet; --output a folder)")
    g.add_argument("--enhance-below", type=int, metavar="N",
                   help="write an enhanced copy: captions of pairs with overall < N (strictly below) replaced by "
                        "the recaption; pairs that failed are left out")
    g.add_argument("--enhanced-output", metavar="DIR2", help="folder for the enhanced copy (with --enhance-below)")
    g.add_argument("--drop-below", type=int, metavar="N",
                   help="leave out of the enhanced copy the pairs with overall < N (strictly below)")
    g.add_argument("--keep-failed", action="store_true",
                   help="copy the pairs that failed (unreadable image, missing caption, any error) unchanged "
                        "into the enhanced copy instead of leaving them out")
    g.add_argument("--keep-min-overall", type=int, metavar="N",
                   help="write a keep list of the pairs with overall >= N (inclusive) to --keep-list "
                        "(the same as python -m runtime.select afterwards)")
    g.add_argument("--keep-list", metavar="FILE", help="the keep list to write, outside --output")
    g.add_argument("--keep-format", choices=FORMATS,
                   help="the keep list's format (default: datacomp-npy when every kept pair has a DataComp uid, "
                        "else keys; the summary says which)")
    g.add_argument("--keep-above", type=int, help=argparse.SUPPRESS)  # renamed: refused with the new names
    g.add_argument("--caption-field", metavar="NAME", help="WebDataset: take the caption from this KEY.json field")
    g.add_argument("--key-column", metavar="NAME", help="Parquet: key column (default: key, uid or id)")
    g.add_argument("--image-column", metavar="NAME", help="Parquet: image bytes or path column (default: jpg, image, ...)")
    g.add_argument("--caption-column", metavar="NAME", help="Parquet: caption column (default: txt, caption or text)")
    g.add_argument("--shard-index", type=int, default=0, metavar="I", help="this process's share: shards I, I+n, ...")
    g.add_argument("--num-shards", type=int, default=1, metavar="N", help="number of processes splitting the shards")
    g.add_argument("--ray", action="store_true", help="score on a Ray cluster (RAY_ADDRESS, else a local one)")
    lim = p.add_argument_group("limits (memory bounded by these, not by the input; runtime.data.limits)")
    lim.add_argument("--max-caption-chars", type=int, default=limits.CAPTION_CHARS, metavar="N",
                     help=f"a longer caption is that pair's error record (default {limits.CAPTION_CHARS:,})")
    lim.add_argument("--max-caption-bytes", type=int, default=limits.CAPTION_BYTES, metavar="N",
                     help=f"a caption of more UTF-8 bytes is that pair's error record (default {limits.CAPTION_BYTES:,})")
    lim.add_argument("--max-member-bytes", type=int, default=limits.MEMBER_BYTES, metavar="N",
                     help=f"a larger tar member or Parquet cell is that key's error record (default {limits.MEMBER_BYTES:,})")
    g.add_argument("--num-gpus", type=int, metavar="N",
                   help="--ray: number of scorer actors, one GPU each (default: all GPUs; with --device cpu, N CPU actors)")


DATASET_ONLY = ("enhance_below", "enhanced_output", "drop_below", "keep_min_overall", "keep_list", "keep_format",
                "keep_above", "caption_field", "key_column", "image_column", "caption_column", "num_gpus")


def refuse_dataset_flags(args: argparse.Namespace) -> None:
    """A pairs file (JSONL/CSV) or a single pair takes none of the dataset flags: say so, do not ignore them."""
    given = [f"--{name.replace('_', '-')}" for name in DATASET_ONLY if getattr(args, name) is not None]
    given += [f for f, on in (("--ray", args.ray), ("--keep-failed", args.keep_failed), ("--shard-index", args.shard_index),
                              ("--num-shards", args.num_shards != 1)) if on]
    if given:
        raise InputError(f"{', '.join(given)}: only for shard inputs (a folder, brace pattern, .tar or .parquet); "
                         "leave them out for a pairs file or a single pair")


def options(args: argparse.Namespace, demo: bool = False) -> RunOptions:
    """The batch run's options (pairs file or shards) from the command line (`demo`: the built-in demo model)."""
    return RunOptions(output=Path(args.output), batch_size=args.batch_size, workers=args.workers, output_all=args.output_all,
                      max_new_tokens=args.max_new_tokens, enhance_below=args.enhance_below,
                      enhanced_output=Path(args.enhanced_output) if args.enhanced_output else None,
                      drop_below=args.drop_below, keep_failed=args.keep_failed, keep_min_overall=args.keep_min_overall,
                      keep_list=Path(args.keep_list) if args.keep_list else None, keep_format=args.keep_format,
                      demo=demo, caption_field=args.caption_field,
                      columns=Columns(args.key_column, args.image_column, args.caption_column), quiet=args.quiet,
                      limits=limits.Limits(args.max_caption_chars, args.max_caption_bytes, args.max_member_bytes))


def check_copy_and_keep_flags(args: argparse.Namespace) -> None:
    """The enhanced copy's and the keep list's flags come in their pairs (one-line InputErrors)."""
    if args.keep_above is not None:
        raise InputError(f"--keep-above is now --keep-min-overall {args.keep_above} --keep-list FILE (overall >= "
                         f"{args.keep_above}, the list written outside --output)")
    if (args.enhance_below is None) != (args.enhanced_output is None):
        raise InputError("--enhance-below N and --enhanced-output DIR2 go together; give both")
    if args.enhance_below is None and (args.drop_below is not None or args.keep_failed):
        raise InputError("--drop-below and --keep-failed shape the enhanced copy; give --enhance-below N "
                         "--enhanced-output DIR2 too (--enhance-below 0 replaces no caption)")
    if (args.keep_min_overall is None) != (args.keep_list is None):
        raise InputError("--keep-min-overall N and --keep-list FILE go together; give both")
    if args.keep_format is not None and args.keep_list is None:
        raise InputError("--keep-format is for the keep list; give --keep-min-overall N --keep-list FILE too")


def run_dataset(args: argparse.Namespace, model: Path, demo: bool = False) -> int:
    """Score the shards `args.input` names with `model` (`demo`: the built-in demo model); the exit code."""
    check_copy_and_keep_flags(args)
    opts = options(args, demo)
    if opts.output.exists() and not opts.output.is_dir():
        raise InputError(f"--output {opts.output}: is a file; with shards as input, --output is a folder")
    if args.workers < 0:
        raise InputError("--workers must be >= 0")
    if opts.keep_list is not None:
        check_outside(opts.keep_list, opts.output, "--keep-list")
    shards = find_shards(args.input)
    if opts.enhanced_output is not None:
        clash = {s.path.parent.resolve() for s in shards} & {opts.enhanced_output.resolve()}
        if clash:
            raise InputError(f"--enhanced-output {opts.enhanced_output}: is the input folder; the copy would overwrite "
                             "the shards, pass another folder")
    locate(model, accept=SCORABLE)
    if args.ray:
        from runtime.launch.ray_data import ray_module, run_ray

        if args.num_shards != 1:
            raise InputError("--ray spreads the shards itself; leave out --shard-index/--num-shards")
        ray_module()  # without Ray: one line now, not after the output is made
    elif args.num_gpus is not None:
        raise InputError("--num-gpus is for --ray; without Ray, start one process per GPU with --shard-index/--num-shards")
    mine = pick(shards, args.shard_index, args.num_shards)
    opts.output.mkdir(parents=True, exist_ok=True)
    spec = spec_of(args, model)
    fingerprint = model_fingerprint(model)
    if args.ray:
        return run_ray(spec, shards, ShardOutput(opts, fingerprint, shards), actors=args.num_gpus)
    share = f"{args.shard_index}-of-{args.num_shards}" if args.num_shards != 1 else None
    return run_batch(cached_loader(spec), mine, ShardOutput(opts, fingerprint, shards, share), opts)
