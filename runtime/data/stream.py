"""Score many shards as one stream of pairs, and get each shard's rows back as soon as it is done.

One `Scorer.score_stream` call serves all the shards of a process, so its reader workers start
once and keep decoding ahead across shard boundaries. Each shard's last batch is closed with
placeholder pairs (an empty image, which the scorer refuses before the model runs, so they cost
no model time and their verdicts are dropped): every model batch then holds pairs of one shard only,
the same batches whichever process or Ray actor scores that shard, so the rows are the same.
Records a reader refused (errors) never go to the scorer; they are put back in the shard's order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from runtime.data import verdicts
from runtime.data.records import Shard, ShardError

_END = object()  # the end of a shard in the plan
_FILLER = object()  # a placeholder pair


@dataclass
class ShardRows:
    shard: Shard
    rows: list[dict] = field(default_factory=list)
    failure: str | None = None
    start: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0


def score_shards(scorer, shards: list[Shard], read, opts, fingerprint: str) -> Iterator[ShardRows]:
    """Each shard's verdict rows (or its failure), in shard order. `read(shard)` yields its records."""
    from runtime.scorer import Pair

    plan: deque = deque()  # (ShardRows, Record | _FILLER | _END), in the order pairs were read

    def pairs() -> Iterator[Pair]:
        for shard in shards:
            state, good = ShardRows(shard), 0
            try:
                for rec in read(shard):
                    plan.append((state, rec))
                    if rec.error is None:
                        good += 1
                        image, rec.image = rec.image, None  # the pair holds the bytes now
                        yield Pair(image, rec.caption, rec.key)
            except ShardError as e:
                state.failure = str(e)
            except Exception as e:  # e.g. the file vanished or is unreadable: this shard only
                state.failure = f"{shard.path}: cannot be read ({type(e).__name__}: {' '.join(str(e).split())}); check it"
            for _ in range(-good % opts.batch_size):
                plan.append((state, _FILLER))
                yield Pair(b"", "", None)
            plan.append((state, _END))

    def settle(upto_verdict) -> Iterator[ShardRows]:
        """Move plan entries into rows until the one `upto_verdict` belongs to (None: to the end)."""
        while plan:
            state, item = plan.popleft()
            if item is _END:
                state.seconds = time.perf_counter() - state.start
                yield state
            elif item is _FILLER or item.error is None:
                if upto_verdict is None:
                    raise RuntimeError("the scorer returned fewer verdicts than pairs")
                if item is not _FILLER:
                    if upto_verdict.id != item.key:
                        raise RuntimeError(f"verdict for {upto_verdict.id!r} came back for key {item.key!r}")
                    state.rows.append(verdicts.row(item, upto_verdict, scorer.model_id, fingerprint))
                return
            else:
                state.rows.append(verdicts.row(item, None, scorer.model_id, fingerprint))

    stream = scorer.score_stream(pairs(), batch_size=opts.batch_size, workers=opts.workers,
                                 output_all=opts.output_all, max_new_tokens=opts.max_new_tokens)
    for verdict in stream:
        yield from settle(verdict)
    yield from settle(None)
