"""Per-shard outputs of a shard run: `OUTPUT/SHARD.aitqe.parquet`, the enhanced copies, the keep list;
resumed shard by shard.

A shard's verdicts are written atomically as soon as it is wholly scored (with `replaced` and
`dropped` as its enhanced copy will have them, and the run's settings), then its enhanced copy, so a
shard whose verdicts exist is skipped (its enhanced copy made from them if missing, the verdicts
rewritten with the copy's marks): a killed run loses at most the shards in progress, and a rerun
redoes only those (and the shards that failed). A shard that cannot be read, or that the run stops
in, is reported and left without output; the others go on. Progress: one bar of pairs (total from
the shards where their format knows it cheaply: Parquet footers, img2dataset's metadata of a tar)
and a line per finished shard. `process_shard` is what a Ray actor runs on the shard it is given.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from runtime.atomic import TMP_PREFIX, remove_stale_temporaries
from runtime.data import enhance, keep, progress, verdicts
from runtime.data.formats import count, read_records
from runtime.data.records import OUTPUT_SUFFIX, Record, Shard, ShardError
from runtime.data.run import RunOptions, process
from runtime.data.stream import Event
from runtime.errors import InputError


@dataclass
class ShardResult:
    shard: str
    rows: int = 0
    errors: int = 0
    replaced: int | None = None
    dropped: int | None = None
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


def check_writable(folder: Path, flag: str) -> None:
    """Make `folder` and write a file in it, before any scoring; else a one-line InputError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f"{TMP_PREFIX}probe-"):
            pass
    except OSError as e:
        raise InputError(f"{flag} {folder}: cannot write there ({e.strerror or e}); make it writable or pass "
                         "another folder") from None


def report(result: ShardResult, opts: RunOptions) -> None:
    """The shard's line (above the progress bar); under --quiet only a failure's."""
    if result.failure:
        progress.say(f"error: {result.failure}")
    elif not opts.quiet:
        what = "already done" if result.skipped else f"scored in {result.seconds:.1f} s"
        more = f", {result.replaced} captions replaced" if result.replaced is not None else ""
        more += f", {result.dropped} pairs left out of the copy" if result.dropped else ""
        progress.say(f"{result.shard}: {result.rows} keys ({result.errors} with errors) {what}{more}")


def counted(result: ShardResult, rows: list[dict]) -> None:
    result.rows, result.errors = len(rows), sum(r["error"] is not None for r in rows)


def shards_total(shards: list[Shard]) -> int | None:
    """The pairs of `shards` where every one's format knows its count cheaply, else None."""
    counts = [count(s) for s in shards]
    return None if any(c is None for c in counts) else sum(counts)


class ShardOutput:
    """`runtime.data.run.Output` for shards: one verdicts Parquet per shard, resumed by shard."""

    def __init__(self, opts: RunOptions, fingerprint: str, all_shards: list[Shard] | None = None,
                 share: str | None = None, reports: bool = True):
        self.path, self.share, self.opts, self.fingerprint = opts.output, share, opts, fingerprint
        self.all_shards, self.reports = all_shards, reports
        self.results: list[ShardResult] = []
        self.rows: dict[Path, list[dict]] = {}
        self.pending: dict[Path, Shard] = {}
        self.model, self.note, self.engine, self.bar = "", None, None, None

    def add(self, result: ShardResult) -> None:
        self.results.append(result)
        if self.reports:
            report(result, self.opts)

    def _enhancing(self, shard: Shard) -> bool:
        return self.opts.enhance_below is not None and \
            not enhance.enhanced_path(shard, self.opts.enhanced_output).exists()

    def _settings(self) -> dict:
        return verdicts.settings(self.opts, self.model, self.fingerprint, self.engine,
                                 self.opts.demo or self.note is not None)

    def _write(self, shard: Shard, rows: list[dict], run: dict, result: ShardResult) -> None:
        """The verdicts (marked as the copy will be), then the enhanced copy if asked and missing."""
        counted(result, rows)
        enhancing = self._enhancing(shard)
        verdicts.write(enhance.mark(rows, self.opts) if enhancing else rows, verdicts_path(shard, self.opts), run)
        if enhancing:
            result.replaced, result.dropped = enhance.write_enhanced_shard(shard, rows, self.opts.enhanced_output,
                                                                           self.opts)

    def _done(self, shard: Shard, out: Path) -> ShardResult:
        """A shard whose verdicts exist: checked, and its enhanced copy made from them if missing."""
        result = ShardResult(shard.path.name, skipped=True)
        try:
            enhancing = self._enhancing(shard)
            rows = verdicts.read(out, None if enhancing else ["key", "error", "model_fingerprint"])
            if rows and rows[0]["model_fingerprint"] != self.fingerprint:
                raise ShardError(f"{out}: scored with another model ({rows[0]['model_fingerprint']}); "
                                 "pass another --output, or delete the file to rescore the shard")
            if enhancing:  # the verdicts rewritten with the copy's marks and settings
                self._write(shard, rows, {**verdicts.run_of(out), **verdicts.copy_settings(self.opts)}, result)
            else:
                counted(result, rows)
        except Exception as e:
            result.failure = _failure(shard, e)
        return result

    def todo(self, shards: list[Shard]) -> list[tuple[Shard, Iterable[Record]]]:
        self.all_shards = self.all_shards or shards
        todo = []
        for shard in shards:
            out = verdicts_path(shard, self.opts)
            if verdicts.complete(out):
                self.add(self._done(shard, out))
            else:
                todo.append(shard)
        if todo or any(self._enhancing(s) for s in shards):
            check_writable(self.opts.output, "--output")
            if self.opts.enhance_below is not None:
                check_writable(self.opts.enhanced_output, "--enhanced-output")
        for shard in todo:
            remove_stale_temporaries(verdicts_path(shard, self.opts))
        self.pending = {s.path: s for s in todo}
        if todo and self.reports:
            self.bar = progress.bar(shards_total(todo), self.opts.quiet)
        return [(s, read_records(s, self.opts)) for s in todo]

    def start(self, scorer) -> None:
        self.model, self.note, self.engine = scorer.model_id, scorer.note, scorer.engine

    def take(self, event: Event) -> None:
        shard = event.shard
        if event.record is not None:
            self.rows.setdefault(shard.path, []).append(
                verdicts.row(event.record, event.verdict, self.model, self.fingerprint, self.note))
            if self.bar is not None:
                self.bar.update(1)
            return
        rows = self.rows.pop(shard.path, [])
        del self.pending[shard.path]
        result = ShardResult(shard.path.name, seconds=event.seconds, failure=event.failure)
        if not event.failure:
            try:
                self._write(shard, rows, self._settings(), result)
            except Exception as e:
                result.failure = _failure(shard, e)
        self.add(result)

    def abort(self, error: Exception) -> None:
        """The shards not yet written are reported, and retried by the next run."""
        for shard in self.pending.values():
            self.add(ShardResult(shard.path.name, failure=_failure(shard, error)))
        self.pending = {}

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _keep_list(self) -> None:
        """Write the keep list once every shard has verdicts (`runtime.data.keep`, as runtime.select does)."""
        opts = self.opts
        done = [verdicts_path(s, opts) for s in self.all_shards or []]
        missing = sum(not verdicts.complete(p) for p in done)
        if missing:
            print(f"keep list not written yet: {missing} shards have no verdicts; rerun once every shard is scored",
                  file=sys.stderr)
            return
        rows = keep.select(keep.rows_of(done), opts.keep_min_overall)
        fmt = opts.keep_format or keep.default_format(rows)
        why = "" if opts.keep_format else (", the default as the pairs have DataComp uids" if fmt == "datacomp-npy"
                                           else ", the default as the pairs have no DataComp uids")
        kept = keep.write(rows, opts.keep_list, fmt)
        print(f"{kept} keys with {keep.bounds(opts.keep_min_overall, None)} listed in {opts.keep_list} "
              f"({fmt}{why}; --keep-format to choose)", file=sys.stderr)

    def finish(self) -> int:
        """Write the keep list if asked; print the summary; the exit code."""
        opts, results = self.opts, self.results
        failed = [r for r in results if r.failure]
        if opts.keep_list is not None:
            self._keep_list()
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
