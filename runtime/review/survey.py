"""One pass over every verdict of a run: the score histograms (overall and per shard) from every row,
and which rows the page shows, within bounds however large the run.

Shown: the `lowest` lowest-scored rows (by overall, then overall_expected, then key: the same order
as sorting the table), and, besides those, up to `sample` each of the replaced rows, the rows
without a score (error or unparsed output) and the other rows, each drawn uniformly at random with
a seeded generator: every row gets a random priority, a group keeps its `sample + lowest` smallest
as it goes, and the `sample` smallest of them that are not among the lowest are shown.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field

from runtime.review.verdicts import Unit, index

GROUPS = ("replaced", "no score", "sampled")  # the sampled groups, besides "lowest"


@dataclass
class Histogram:
    counts: Counter = field(default_factory=Counter)  # overall score -> rows
    rows: int = 0
    unscored: int = 0  # rows without an overall score (an error, an unparsed output)
    replaced: int = 0
    dropped: int = 0

    def add(self, table) -> None:
        import pyarrow.compute as pc

        overall = table["overall"]
        for item in pc.value_counts(overall.drop_null()).to_pylist():
            self.counts[item["values"]] += item["counts"]
        self.rows += table.num_rows
        self.unscored += overall.null_count
        self.replaced += pc.sum(table["replaced"]).as_py() or 0
        self.dropped += pc.sum(table["dropped"]).as_py() or 0

    @property
    def scored(self) -> int:
        return self.rows - self.unscored

    @property
    def mean(self) -> float | None:
        return sum(s * n for s, n in self.counts.items()) / self.scored if self.scored else None


@dataclass
class Survey:
    units: list[Unit]
    total: Histogram
    shards: dict[str, Histogram]  # unit name -> its histogram, in the units' order
    picks: dict[tuple[int, int], str]  # (unit index, row position) -> why it is shown: "lowest" or one of GROUPS


def _order(overall: int, expected: float | None, key: str) -> tuple:
    return overall, math.inf if expected is None else expected, key


def survey(units: list[Unit], lowest: int, sample: int, seed: int) -> Survey:
    import numpy as np
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    total, shards = Histogram(), {}
    low: list[tuple] = []  # (order, unit, pos)
    groups: dict[str, list[tuple]] = {g: [] for g in GROUPS}  # (priority, unit, pos)
    for u, unit in enumerate(units):
        hist = shards.setdefault(unit.name, Histogram())
        for t in index(unit):
            hist.add(t)
            total.add(t)
            if lowest:
                head = t.filter(pc.is_valid(t["overall"])).sort_by(
                    [("overall", "ascending"), ("overall_expected", "ascending"), ("key", "ascending")]).slice(0, lowest)
                low = heapq.nsmallest(lowest, low + [(_order(r["overall"], r["overall_expected"], r["key"]), u, r["pos"])
                                                     for r in head.to_pylist()])
            priority = rng.random(t.num_rows)
            replaced = t["replaced"].to_numpy(zero_copy_only=False)
            unscored = t["overall"].is_null().to_numpy(zero_copy_only=False)
            pos = t["pos"].to_numpy()
            keep = sample + lowest  # room for the sample after the lowest are taken out
            for name, mask in zip(GROUPS, (replaced, unscored & ~replaced, ~replaced & ~unscored)):
                idx = np.flatnonzero(mask)
                if len(idx) > keep:
                    idx = idx[np.argpartition(priority[idx], keep)[:keep]]
                groups[name] = heapq.nsmallest(keep, groups[name] + [(priority[i], u, int(pos[i])) for i in idx])
    picks = {(u, pos): "lowest" for _, u, pos in low}
    for why, chosen in groups.items():
        picks.update({(u, pos): why for _, u, pos in [c for c in chosen if (c[1], c[2]) not in picks][:sample]})
    return Survey(units, total, shards, picks)
