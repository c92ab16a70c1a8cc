"""Batch mode on llama.cpp's parallel sequences (`LlamaCppDecoder` with slots > 1: several rows in one
`llama_decode` per step, continuous batching, `runtime.engine.llama_lanes`) gives the ids of one row
at a time: the original's on the 35 golden cases (both modes, 4 and 8 lanes), the same verdicts
as 1 slot on held-out demo pairs and the traps, expected scores within 0.01 (their "1" branches
evaluated on each row's own sequence while other rows are running).
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from runtime.scorer import Pair, Scorer  # noqa: E402
from tests.test_gguf_llama_cpp import CASES, GOLDEN, MAX_NEW, MODES, demo_f16, golden_export, held_out  # noqa: E402,F401


@pytest.mark.parametrize("slots", [4, 8])
def test_golden_cases_decoded_together_give_the_originals_ids(golden_export, slots):  # noqa: F811
    s = Scorer.from_pretrained(golden_export, threads=1, slots=slots)
    assert s.decoder.slots == slots
    prepared = [s.prepare(Pair(GOLDEN / "images" / c["image"], c["caption"]), MAX_NEW) for c in CASES]
    rows = s.encode(prepared)
    for mode, output_all in MODES.items():
        decoded = s.decode(rows, output_all=output_all, max_new_tokens=MAX_NEW)
        assert decoded.ids == [c[f"new_ids_{mode}"] for c in CASES], mode
    assert s.model.lanes == slots
    s.decode(rows[:2], output_all=False, max_new_tokens=MAX_NEW)
    assert s.model.lanes == 2  # a call of fewer rows keeps a smaller context


def test_demo_pairs_decoded_together_give_the_verdicts_of_one_at_a_time(demo_f16):  # noqa: F811
    pairs = [Pair(im, cap, id=k) for k, (im, cap) in enumerate(held_out(12))]
    one = list(Scorer.from_pretrained(demo_f16, threads=1, slots=1).score_stream(pairs, batch_size=4))
    four = list(Scorer.from_pretrained(demo_f16, threads=1, slots=4).score_stream(pairs, batch_size=4))
    assert [v.id for v in four] == [v.id for v in one]
    assert [(v.raw_text, v.overall_score, v.error) for v in four] == [(v.raw_text, v.overall_score, v.error) for v in one]
    assert {v.timings["batch_size"] for v in four} == {4}
    for a, b in zip(four, one):
        if b.overall_expected is not None:
            assert a.overall_expected == pytest.approx(b.overall_expected, abs=0.01)
        for k, sub in b.sub_scores.items():
            if sub.get("expected") is not None:
                assert a.sub_scores[k]["expected"] == pytest.approx(sub["expected"], abs=0.01)
