"""Per-shard outputs of a shard run: `OUTPUT/SHARD.aitqe.parquet`, the enhanced copies, the keep list;
resumed shard by shard.

A shard's verdicts are written atomically as soon as it is wholly scored, so a shard whose verdicts
exist is skipped (its enhanced copy made from them if missing): a killed run loses at most the
shards in progress, and a rerun redoes only those (and the shards that failed). A shard that
cannot be read, or that the run stops in, is reported and left without output; the others go on.
`process_shard` is what a Ray actor runs on the shard it is given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from runtime.atomic import remove_stale_temporaries
from runtime.data import enhance, verdicts
from runtime.data.formats import read_records
from runtime.data.records import OUTPUT_SUFFIX, Record, Shard, ShardError
from runtime.data.run import RunOptions, process
from runtime.data.stream import Event


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


def _failure(shard: Shard, e: Exception) -> str:
    if isinstance(e, ShardError):
        return str(e)
    reason = " ".join(str(e).split()) or type(e).__name__
    return f"{shard.path}: scoring failed ({type(e).__name__}: {reason}); rerun to retry this shard"


def report(result: ShardResult, opts: RunOptions) -> None:
    if result.failure:
        print(f"error: {result.failure}", file=sys.stderr)
    elif not opts.quiet:
        what = "already done" if result.skipped else f"scored in {result.seconds:.1f} s"
        more = f", {result.replaced} captions replaced" if result.replaced is not None else ""
        print(f"{result.shard}: {result.rows} keys ({result.errors} with errors) {what}{more}", file=sys.stderr)


class ShardOutput:
    """`runtime.data.run.Output` for shards: one verdicts Parquet per shard, resumed by shard."""

    def __init__(self, opts: RunOptions, fingerprint: str, all_shards: list[Shard] | None = None,
                 share: str | None = None, reports: bool = True):
        self.path, self.share, self.opts, self.fingerprint = opts.output, share, opts, fingerprint
        self.all_shards, self.reports = all_shards, reports
        self.results: list[ShardResult] = []
        self.rows: dict[Path, list[dict]] = {}
        self.pending: dict[Path, Shard] = {}
        self.model = ""

    def add(self, result: ShardResult) -> None:
        self.results.append(result)
        if self.reports:
            report(result, self.opts)

    def _enhancing(self, shard: Shard) -> bool:
        return self.opts.enhance_below is not None and \
            not enhance.enhanced_path(shard, self.opts.enhanced_output).exists()

    def _finish_shard(self, shard: Shard, rows: list[dict], result: ShardResult) -> None:
        """Write the enhanced copy if asked and missing; count the rows."""
        result.rows, result.errors = len(rows), sum(r["error"] is not None for r in rows)
        if self._enhancing(shard):
            result.replaced = enhance.write_enhanced_shard(shard, rows, self.opts.enhance_below,
                                                           self.opts.enhanced_output, self.opts)

    def todo(self, shards: list[Shard]) -> list[tuple[Shard, Iterable[Record]]]:
        self.all_shards = self.all_shards or shards
        todo = []
        for shard in shards:
            out = verdicts_path(shard, self.opts)
            if not out.exists():
                todo.append(shard)
                continue
            result = ShardResult(shard.path.name, skipped=True)
            try:
                rows = verdicts.read(out, None if self._enhancing(shard) else ["key", "error", "model_fingerprint"])
                if rows and rows[0]["model_fingerprint"] != self.fingerprint:
                    raise ShardError(f"{out}: scored with another model ({rows[0]['model_fingerprint']}); "
                                     "pass another --output, or delete the file to rescore the shard")
                self._finish_shard(shard, rows, result)
            except Exception as e:
                result.failure = _failure(shard, e)
            self.add(result)
        for shard in todo:
            remove_stale_temporaries(verdicts_path(shard, self.opts))
        self.pending = {s.path: s for s in todo}
        return [(s, read_records(s, self.opts)) for s in todo]

    def start(self, scorer) -> None:
        self.model = scorer.model_id

    def take(self, event: Event) -> None:
        shard = event.shard
        if event.record is not None:
            self.rows.setdefault(shard.path, []).append(
                verdicts.row(event.record, event.verdict, self.model, self.fingerprint))
            return
        rows = self.rows.pop(shard.path, [])
        del self.pending[shard.path]
        result = ShardResult(shard.path.name, seconds=event.seconds, failure=event.failure)
        if not event.failure:
            try:
                verdicts.write(rows, verdicts_path(shard, self.opts))
                self._finish_shard(shard, rows, result)
            except Exception as e:
                result.failure = _failure(shard, e)
        self.add(result)

    def abort(self, error: Exception) -> None:
        """The shards not yet written are reported, and retried by the next run."""
        for shard in self.pending.values():
            self.add(ShardResult(shard.path.name, failure=_failure(shard, error)))
        self.pending = {}

    def close(self) -> None:
        pass

    def finish(self) -> int:
        """Write the keep list once every shard has verdicts; print the summary; the exit code."""
        opts, results = self.opts, self.results
        failed = [r for r in results if r.failure]
        if opts.keep_above is not None:
            done = [verdicts_path(s, opts) for s in self.all_shards or []]
            if all(p.exists() for p in done):
                needed = ["key", "uid", "overall", "error"]
                path, kept = enhance.write_keep_list((r for p in done for r in verdicts.read(p, needed)),
                                                     opts.keep_above, opts.output)
                print(f"{kept} keys with overall >= {opts.keep_above} listed in {path}", file=sys.stderr)
            else:
                print(f"keep list not written yet: {sum(not p.exists() for p in done)} shards have no verdicts; "
                      "rerun once every shard is scored", file=sys.stderr)
        rows = sum(r.rows for r in results)
        print(f"{len(results) - len(failed)} of {len(results)} shards done ({rows} keys) into {opts.output}"
              + (f"; {len(failed)} failed: rerun the same command to retry them" if failed else ""), file=sys.stderr)
        return 1 if failed else 0


def process_shard(get_scorer: Callable[[], object], shard: Shard, opts: RunOptions, fingerprint: str) -> ShardResult:
    """Score one shard into its outputs (unless done); its result, reported by the caller."""
    output = ShardOutput(opts, fingerprint, reports=False)
    process(get_scorer, [shard], output, opts)
    (result,) = output.results
    return result
