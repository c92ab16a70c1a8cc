"""The compiled decode step: one graph per slot bucket, all compiled in warm-up, none after (a smaller
batch decodes on views of the same cache), with the eager step's ids."""

from __future__ import annotations

import pytest

from calibration.split import demo_pairs
from runtime.demo import DEMO_MODEL
from runtime.engine import StopRule
from runtime.engine.fast import FastDecoder, _buckets
from runtime.parse import OVERALL_MARK
from runtime.scorer import Scorer
from tests.test_engine_fast import rows_of


@pytest.fixture(scope="module")
def demo():
    return Scorer.from_pretrained(DEMO_MODEL, device="cpu")


def test_compiles_once_per_bucket(demo):
    rows = rows_of(demo, demo_pairs(3, 1000, "evaluation"), 48)
    stop = StopRule(demo.eos.ids, OVERALL_MARK)
    eager = FastDecoder(demo.llm, demo.tokenizer, slots=2).decode(rows, stop, 48).ids
    fast = FastDecoder(demo.llm, demo.tokenizer, slots=2, compile=True)
    assert fast.decode(rows, stop, 48).ids == eager
    assert fast.compiles == len(_buckets(2))
    fast.set_slots(1)  # a smaller batch: views of the same cache, graphs already compiled
    assert fast.decode(rows, stop, 48).ids == eager
    assert fast.compiles == len(_buckets(2))
    assert fast.step.cache.k.shape[3] > demo.llm.config.max_position_embeddings  # allocated once, never regrown
