"""The one batch front-end: every input format, read into records, scored by one stream, written
by its output; resumable, one run per output.

`run_batch(get_scorer, shards, output, opts)` holds the output's lock (`runtime.lock`) for the
whole run, asks the output what it already holds (the one resume rule: what is recorded there is
not read or scored again), loads the scorer only when something is left, sends the rest through
`runtime.data.stream.score_records` (one error-record rule, one model-failure rule) and hands each
record's verdict to the output. Only the outputs differ: a pairs file (JSONL, CSV) gives one
verdicts JSONL, resumed by line (`runtime.data.jsonl_output`); shards give one verdicts Parquet
per shard (and enhanced copies), resumed by shard (`runtime.data.shard_output`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runtime.data import progress
from runtime.data.limits import Limits
from runtime.data.parquet_table import Columns
from runtime.data.records import Record, Shard
from runtime.data.stream import Event, score_records
from runtime.lock import output_lock


@dataclass(frozen=True)
class RunOptions:
    output: Path
    batch_size: int = 8
    workers: int = 0
    output_all: bool = False
    max_new_tokens: int = 384
    enhance_below: int | None = None
    enhanced_output: Path | None = None
    drop_below: int | None = None  # the enhanced copy leaves out pairs scored strictly below this
    keep_failed: bool = False  # the enhanced copy keeps the pairs that failed (unchanged)
    keep_min_overall: int | None = None  # write a keep list of the pairs with overall >= this ...
    keep_list: Path | None = None  # ... here (outside the output folder)
    keep_format: str | None = None  # datacomp-npy | keys | parquet (None: datacomp-npy if uids, else keys)
    demo: bool = False  # the built-in demo model was asked for (--model demo)
    caption_field: str | None = None  # WebDataset: caption from this .json field instead of .txt
    columns: Columns = field(default_factory=Columns)  # Parquet: key, image, caption column names
    quiet: bool = False
    limits: Limits = field(default_factory=Limits)  # caption and member sizes (runtime.data.limits)


class Output(Protocol):
    """Where a batch run's verdicts go, and what it already holds."""

    path: Path  # the file or folder written; one run at a time (per share) holds its lock
    share: str | None  # `I-of-N` for a --shard-index process, else None
    reports: bool  # says on stderr what it does (False: a Ray actor's, whose driver reports)

    def todo(self, shards: list[Shard]) -> list[tuple[Shard, Iterable[Record]]]:
        """The units (and their records) the output does not hold yet."""

    def start(self, scorer) -> None:
        """The scorer is loaded; records come next."""

    def take(self, event: Event) -> None:
        """One record with its verdict, or a unit's end."""

    def abort(self, error: Exception) -> None:
        """The stream stopped with `error` (not one pair's failure): record it, or raise it."""

    def close(self) -> None:
        """Release what the output holds open (called however the run ends)."""

    def finish(self) -> int:
        """Say what was done (stderr); the exit code."""


def process(get_scorer: Callable[[], object], shards: list[Shard], output: Output, opts: RunOptions) -> None:
    """Score what `output` does not hold yet (the lock is the caller's)."""
    try:
        todo = output.todo(shards)
        if not todo:
            return
        scorer = get_scorer()  # a model that cannot load is the run's error, not each unit's
        output.start(scorer)
        if output.reports:
            progress.say_demo(opts)
        try:
            for event in score_records(scorer, todo, opts):
                output.take(event)
        except Exception as e:
            output.abort(e)
    finally:
        output.close()


def run_batch(get_scorer: Callable[[], object], shards: list[Shard], output: Output, opts: RunOptions) -> int:
    """Score `shards` (a pairs file is one) into `output`, holding its lock; the exit code."""
    with output_lock(output.path, output.share):
        process(get_scorer, shards, output, opts)
        return output.finish()
