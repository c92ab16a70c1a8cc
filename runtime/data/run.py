"""Score shards into per-shard outputs; resumable shard by shard.

The records of this process's shards go through one `Scorer.score_stream` (`runtime.data.stream`;
reader workers decode images ahead of the model), and `OUTPUT/SHARD.aitqe.parquet` is written
atomically as soon as a shard is wholly scored. A shard whose verdicts exist is skipped, so a killed run loses at most the shard
in progress, and a rerun redoes only that one (and the shards that failed). The enhanced copy is
written from the verdicts file, so it can also be made later from a finished run. A shard that
cannot be read, or on which the model fails, is reported and left without output; the others go on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from runtime.data import enhance, parquet_table, verdicts, webdataset_tar
from runtime.data.stream import score_shards
from runtime.atomic import remove_stale_temporaries
from runtime.data.records import OUTPUT_SUFFIX, Record, Shard, ShardError


@dataclass(frozen=True)
class RunOptions:
    output: Path
    batch_size: int = 8
    workers: int = 0
    output_all: bool = False
    max_new_tokens: int = 384
    enhance_below: int | None = None
    enhanced_output: Path | None = None
    keep_above: int | None = None
    caption_field: str | None = None  # WebDataset: caption from this .json field instead of .txt
    columns: parquet_table.Columns = field(default_factory=parquet_table.Columns)
    quiet: bool = False


@dataclass
class ShardResult:
    shard: str
    rows: int = 0
    errors: int = 0
    replaced: int | None = None
    seconds: float = 0.0
    skipped: bool = False
    failure: str | None = None


def verdicts_path(shard: Shard, opts: RunOptions) -> Path:
    return opts.output / f"{shard.name}{OUTPUT_SUFFIX}"


def read_records(shard: Shard, opts: RunOptions) -> Iterator[Record]:
    if shard.format == "webdataset":
        return webdataset_tar.read_shard(shard, opts.caption_field)
    return parquet_table.read_shard(shard, opts.columns)


def _finish_shard(shard: Shard, rows: list[dict], opts: RunOptions, result: ShardResult) -> None:
    """Write the enhanced copy if asked and missing; count the rows."""
    result.rows, result.errors = len(rows), sum(r["error"] is not None for r in rows)
    if opts.enhance_below is not None and not enhance.enhanced_path(shard, opts.enhanced_output).exists():
        result.replaced = enhance.write_enhanced_shard(shard, rows, opts.enhance_below, opts.enhanced_output,
                                                       caption_field=opts.caption_field, columns=opts.columns)


def _failure(shard: Shard, e: Exception) -> str:
    if isinstance(e, ShardError):
        return str(e)
    reason = " ".join(str(e).split()) or type(e).__name__
    return f"{shard.path}: scoring failed ({type(e).__name__}: {reason}); rerun to retry this shard"


def process_shards(get_scorer: Callable[[], object], shards: list[Shard], opts: RunOptions,
                   fingerprint: str) -> Iterator[ShardResult]:
    """Score the shards without verdicts (as one stream), skip the others; a result per shard, as each ends."""
    todo = []
    for shard in shards:
        out = verdicts_path(shard, opts)
        if not out.exists():
            todo.append(shard)
            continue
        result = ShardResult(shard.path.name, skipped=True)
        enhancing = opts.enhance_below is not None and not enhance.enhanced_path(shard, opts.enhanced_output).exists()
        try:
            rows = verdicts.read(out, None if enhancing else ["key", "error", "model_fingerprint"])
            if rows and rows[0]["model_fingerprint"] != fingerprint:
                raise ShardError(f"{out}: scored with another model ({rows[0]['model_fingerprint']}); "
                                 "pass another --output, or delete the file to rescore the shard")
            _finish_shard(shard, rows, opts, result)
        except Exception as e:
            result.failure = _failure(shard, e)
        yield result
    if not todo:
        return
    for shard in todo:
        remove_stale_temporaries(verdicts_path(shard, opts))
    pending = {s.path: s for s in todo}
    scorer = get_scorer()  # a model that cannot load is the run's error, not each shard's
    try:
        for done in score_shards(scorer, todo, lambda s: read_records(s, opts), opts, fingerprint):
            del pending[done.shard.path]
            result = ShardResult(done.shard.path.name, seconds=done.seconds, failure=done.failure)
            if not done.failure:
                try:
                    verdicts.write(done.rows, verdicts_path(done.shard, opts))
                    _finish_shard(done.shard, done.rows, opts, result)
                except Exception as e:
                    result.failure = _failure(done.shard, e)
            yield result
    except Exception as e:  # the model failed (e.g. out of memory): the shards not yet written are retried
        for shard in pending.values():
            yield ShardResult(shard.path.name, failure=_failure(shard, e))


def process_shard(get_scorer: Callable[[], object], shard: Shard, opts: RunOptions, fingerprint: str) -> ShardResult:
    """`process_shards` on one shard."""
    (result,) = process_shards(get_scorer, [shard], opts, fingerprint)
    return result


def report(result: ShardResult, opts: RunOptions) -> None:
    if result.failure:
        print(f"error: {result.failure}", file=sys.stderr)
    elif not opts.quiet:
        what = "already done" if result.skipped else f"scored in {result.seconds:.1f} s"
        more = f", {result.replaced} captions replaced" if result.replaced is not None else ""
        print(f"{result.shard}: {result.rows} keys ({result.errors} with errors) {what}{more}", file=sys.stderr)


def finish(all_shards: list[Shard], results: list[ShardResult], opts: RunOptions) -> int:
    """Write the keep list once every shard has verdicts; print the summary; the exit code."""
    failed = [r for r in results if r.failure]
    if opts.keep_above is not None:
        done = [verdicts_path(s, opts) for s in all_shards]
        if all(p.exists() for p in done):
            needed = ["key", "uid", "overall", "error"]
            path, kept = enhance.write_keep_list((r for p in done for r in verdicts.read(p, needed)), opts.keep_above,
                                                 opts.output)
            print(f"{kept} keys with overall >= {opts.keep_above} listed in {path}", file=sys.stderr)
        else:
            print(f"keep list not written yet: {sum(not p.exists() for p in done)} shards have no verdicts; "
                  "rerun once every shard is scored", file=sys.stderr)
    rows = sum(r.rows for r in results)
    print(f"{len(results) - len(failed)} of {len(results)} shards done ({rows} keys) into {opts.output}"
          + (f"; {len(failed)} failed: rerun the same command to retry them" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def run_shards(get_scorer: Callable[[], object], shards: list[Shard], opts: RunOptions, fingerprint: str,
               all_shards: list[Shard] | None = None) -> int:
    """Process `shards` in this process (of `all_shards`, for the keep list); the exit code."""
    results = []
    for result in process_shards(get_scorer, shards, opts, fingerprint):
        results.append(result)
        report(result, opts)
    return finish(all_shards or shards, results, opts)
