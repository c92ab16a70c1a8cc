"""A new engine is one file that registers itself: here a toy engine, defined and registered in this
test (it wraps the reference engine and counts the rows it decodes), scores demo pairs through
`Scorer.from_pretrained(..., engine="toy")`, in one call and in a stream, with the reference
engine's verdicts. No other file knows of it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import torch

from calibration.split import demo_pairs
from runtime import engine
from runtime.demo import DEMO_MODEL
from runtime.engine import Backbone, Decoded, Finished, Observe, Row, StopRule
from runtime.scorer import Scorer


class Toy:
    """A `Decoder` that hands every row to the reference engine, counting them."""

    name = "toy"
    compiled = False
    compiles = 0

    def __init__(self, backbone: Backbone):
        self.inner = engine.build("reference", backbone)
        self.rows = 0

    @property
    def slots(self) -> int:
        return self.inner.slots

    def set_slots(self, slots: int) -> None:
        self.inner.set_slots(slots)

    def stream(self, rows: Iterable[Row], stop: StopRule, observe: Observe | None = None
               ) -> Iterator[tuple[Any, Finished]]:
        def counted():
            for row in rows:
                self.rows += 1
                yield row
        return self.inner.stream(counted(), stop, observe)

    def decode(self, rows: list[torch.Tensor], stop: StopRule, max_new_tokens: int,
               budgets: list[int] | None = None, observe: Observe | None = None) -> Decoded:
        self.rows += len(rows)
        return self.inner.decode(rows, stop, max_new_tokens, budgets, observe)


engine.register("toy", Toy)


def protocol_gaps(obj) -> list[str]:
    """The members of the `Decoder` protocol that `obj` lacks (a Protocol is not checked by Python)."""
    members = set(engine.Decoder.__annotations__) | {n for n in vars(engine.Decoder) if not n.startswith("_")}
    return sorted(members - set(dir(obj)))


def test_every_engine_has_the_whole_protocol():
    scorers = {name: Scorer.from_pretrained(DEMO_MODEL, device="cpu", engine=name, slots=2)
               for name in ("fast", "reference", "toy")}
    assert {name: protocol_gaps(s.decoder) for name, s in scorers.items()} == {"fast": [], "reference": [], "toy": []}
    assert {"compiles", "slots", "stream", "decode"} <= set(protocol_gaps(object()))


def verdicts(v) -> list[tuple]:
    return [(x.raw_text, x.overall_score, x.overall_expected, x.sub_scores, x.error) for x in v]


@pytest.mark.parametrize("output_all", [False, True])
def test_a_registered_toy_engine_scores_as_the_reference(output_all):
    pairs = demo_pairs(6, 1000, "evaluation")
    toy = Scorer.from_pretrained(DEMO_MODEL, device="cpu", engine="toy", slots=4)
    ref = Scorer.from_pretrained(DEMO_MODEL, device="cpu", engine="reference", slots=4)
    assert toy.engine == "toy" and isinstance(toy.decoder, Toy) and "toy" in engine.names()
    want = verdicts(ref.score_batch(pairs, output_all=output_all))
    assert all(w[0] for w in want) and any(w[2] is not None for w in want)
    assert verdicts(toy.score_batch(pairs, output_all=output_all)) == want
    assert verdicts(toy.score_stream(pairs, batch_size=4, output_all=output_all)) == want
    assert toy.decoder.rows == 2 * len(pairs)
