"""Every quantization method on the trained demo model: per-layer SNR and verdict agreement floors.

Floors are the figures measured with these exact settings (printed by `pytest -s`) minus a margin;
`python -m bench` gives the full tables on 200 pairs."""

from __future__ import annotations

import pytest

from bench.eval.metrics import agreement
from bench.eval.teacher_forced import layer_snr, prompt_rows
from calibration.split import demo_pairs
from quantize.__main__ import main
from runtime.demo import DEMO_MODEL
from runtime.formats.manifest import read_manifest
from runtime.scorer import Scorer

pytestmark = pytest.mark.slow

# method -> (extra quantize args, floor of the lowest layer SNR in dB, floor of overall agreement)
# measured on these 64 pairs: bnb-int8 37.5 dB / 100%, bnb-nf4 21.6 / 98.4%, gptq-int8 53.3 / 100%,
# gptq-int4 32.1 / 98.4%; on 200 evaluation pairs (python -m bench --pairs demo:200, default 128
# calibration pairs): int8 100% both, nf4 99.0%, gptq-int4 99.0%. Floors: at most one pair of 64 lost
# at 8 bits (98%), three at 4 bits (95%), the bars of the fast-kernels issue (int8 99%, 4-bit 95% on 200)
METHODS = {
    "bnb-int8": ([], 34.0, 0.98),
    "bnb-nf4": ([], 19.0, 0.95),
    "gptq-int8": (["--calibration-samples", "32"], 50.0, 0.98),
    "gptq-int4": (["--calibration-samples", "32"], 27.0, 0.95),
}


@pytest.fixture(scope="module")
def reference():
    return Scorer.from_pretrained(DEMO_MODEL, device="cpu")


@pytest.fixture(scope="module")
def pairs():
    return demo_pairs(64, 1000, "evaluation")


@pytest.fixture(scope="module")
def reference_scores(reference, pairs):
    return [v.overall_score for v in reference.score_many(pairs, batch_size=32, output_all=True, quiet=True)]


@pytest.mark.parametrize("method", METHODS)
def test_demo_model_quantized_stays_close(method, reference, pairs, reference_scores, tmp_path):
    extra, snr_floor, agreement_floor = METHODS[method]
    assert main(["--model", str(DEMO_MODEL), "--method", method, "--output", str(tmp_path / method), *extra]) == 0
    cand = Scorer.from_pretrained(tmp_path / method, device="cpu")
    snr = layer_snr(reference.llm, cand.llm, prompt_rows(reference, pairs[:8]))
    exact = agreement(reference_scores, [v.overall_score for v in
                                         cand.score_many(pairs, batch_size=32, output_all=True, quiet=True)])
    print(f"{method}: layer SNR dB {[round(x, 1) for x in snr]}, agreement {exact:.1%}")
    assert min(snr) > snr_floor and exact >= agreement_floor
    calibration = read_manifest(tmp_path / method).calibration
    if method.startswith("gptq"):  # the built-in set: demo world seed 0, calibration split, ids recorded
        assert calibration.count == 32 and calibration.source == "built-in demo-world:seed=0"
        assert not {p.id for p in pairs} & set(calibration.pair_ids)
    else:
        assert calibration is None
