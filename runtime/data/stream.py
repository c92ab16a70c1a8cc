"""The one scoring stream of batch mode: records of any format in, each with its verdict out, in order.

`score_records(scorer, units, opts)` takes units of work (a shard, or a pairs file) with their
records and runs every pair through one `Scorer.score_stream` (prepare -> encode -> decode ->
parse), so its reader workers start once and keep decoding ahead across unit boundaries. It
yields an `Event` per record, in read order, and one at the end of each unit. The rules every
format shares live here:
- A record its reader refused (`error` set) never goes to the model; its event has no verdict.
- Each unit's last batch is closed with placeholder pairs (an empty image, which the scorer
  refuses before the model runs, so they cost no model time and their verdicts are dropped):
  every model batch then holds pairs of one unit only, the same batches whichever process or Ray
  actor scores it, so the verdicts are the same.
- A reader that fails part-way (`ShardError`, or any other error reading) ends its unit with
  `failure` set; the other units go on.
- If the model fails mid-stream (e.g. out of memory), the rest go batch by batch, and a pair the
  model still fails on gets a verdict with `error: model failed on this pair: ...`.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice

from runtime.data.records import Record, Shard, ShardError

FILLER = Record(b"", "")  # the placeholder pair


@dataclass
class Event:
    """A record with its verdict (None: its reader refused it), or, with `record` None, a unit's end."""

    shard: Shard
    record: Record | None = None
    verdict: object | None = None  # runtime.scorer.Verdict
    failure: str | None = None  # at a unit's end: why it could not be read to the end
    seconds: float = 0.0  # at a unit's end: since its first record was read


@dataclass
class _End:
    start: float
    failure: str | None = None


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def score_each(scorer, pairs: list[Record], opts) -> list:
    """Score pairs as one batch; if the model fails on it, pair by pair, each failure a verdict's error."""
    from runtime.scorer import Verdict

    if not pairs:
        return []
    try:
        return scorer.score_batch(pairs, output_all=opts.output_all, max_new_tokens=opts.max_new_tokens)
    except RuntimeError as e:  # e.g. out of memory on this batch
        if len(pairs) > 1:
            return [v for p in pairs for v in score_each(scorer, [p], opts)]
        return [Verdict(id=pairs[0].id, model=scorer.model_id, error=f"model failed on this pair: {_reason(e)}")]


def score_records(scorer, units: Iterable[tuple[Shard, Iterable[Record]]], opts) -> Iterator[Event]:
    """An Event per record of each unit, in order, and one at each unit's end (see the module's rules)."""
    plan: deque = deque()  # (Shard, Record | FILLER | _End), in the order records were read

    def pairs() -> Iterator[Record]:
        for shard, records in units:
            end, good = _End(time.perf_counter()), 0
            try:
                for rec in records:
                    plan.append((shard, rec))
                    if rec.error is None:
                        good += 1
                        yield rec
            except ShardError as e:
                end.failure = str(e)
            except Exception as e:  # e.g. the file vanished or is unreadable: this unit only
                end.failure = f"{shard.path}: cannot be read ({type(e).__name__}: {' '.join(str(e).split())}); check it"
            for _ in range(-good % opts.batch_size):
                plan.append((shard, FILLER))
                yield FILLER
            plan.append((shard, end))

    def settle(verdict) -> Iterator[Event]:
        """Events for plan entries up to the one `verdict` belongs to (None: to the end)."""
        while plan:
            shard, item = plan.popleft()
            if isinstance(item, _End):
                yield Event(shard, failure=item.failure, seconds=time.perf_counter() - item.start)
            elif item.error is None:  # a pair the scorer was given (or a placeholder)
                if verdict is None:
                    raise RuntimeError("the scorer returned fewer verdicts than pairs")
                if item is not FILLER:
                    if verdict.id != item.id:
                        raise RuntimeError(f"verdict for {verdict.id!r} came back for {item.id!r}")
                    yield Event(shard, item, verdict)
                return
            else:
                yield Event(shard, item)

    source = pairs()
    stream = scorer.score_stream(source, batch_size=opts.batch_size, workers=opts.workers,
                                 output_all=opts.output_all, max_new_tokens=opts.max_new_tokens)
    while True:
        try:
            verdict = next(stream)
        except StopIteration:
            break
        except RuntimeError as e:
            print(f"warning: the model failed while streaming ({_reason(e)}); going on batch by batch", file=sys.stderr)
            waiting = [item for _, item in plan if isinstance(item, Record) and item.error is None]
            rest = chain(waiting, source)
            while batch := list(islice(rest, opts.batch_size)):
                for v in score_each(scorer, batch, opts):
                    yield from settle(v)
            break
        yield from settle(verdict)
    yield from settle(None)
