"""Every quantization method on the trained demo model: per-layer SNR and verdict agreement floors.

Floors are the figures measured with these exact settings (printed by `pytest -s`) minus a margin;
`python -m quantize.agreement` gives the full table on 200 pairs."""

from __future__ import annotations

import pytest

from quantize.__main__ import main
from quantize.agreement import agreement, layer_snr, overall_scores, prompt_embeddings
from runtime.demo import DEMO_MODEL
from runtime.demo.evaluate import held_out_pairs
from runtime.scorer import Scorer

pytestmark = pytest.mark.slow

# method -> (extra quantize args, floor of the lowest layer SNR in dB, floor of overall agreement)
# measured: bnb-int8 38.8 dB / 100%, bnb-nf4 21.6 / 100%, gptq-int8 55.2 / 100%, gptq-int4 31.5 / 100%;
# the agreement floors are the bars (int8 97%, 4-bit 90%)
METHODS = {
    "bnb-int8": ([], 34.0, 0.97),
    "bnb-nf4": ([], 19.0, 0.9),
    "gptq-int8": (["--calibration-samples", "32"], 50.0, 0.97),
    "gptq-int4": (["--calibration-samples", "32"], 27.0, 0.9),
}


@pytest.fixture(scope="module")
def reference():
    return Scorer.from_pretrained(DEMO_MODEL, device="cpu")


@pytest.fixture(scope="module")
def pairs():
    return held_out_pairs(64, seed=1000)


@pytest.fixture(scope="module")
def reference_scores(reference, pairs):
    return overall_scores(reference, pairs, 32, "reference")


@pytest.mark.parametrize("method", METHODS)
def test_demo_model_quantized_stays_close(method, reference, pairs, reference_scores, tmp_path):
    extra, snr_floor, agreement_floor = METHODS[method]
    assert main(["--model", str(DEMO_MODEL), "--method", method, "--output", str(tmp_path / method), *extra]) == 0
    cand = Scorer.from_pretrained(tmp_path / method, device="cpu")
    snr = layer_snr(reference.llm, cand.llm, prompt_embeddings(reference, pairs[:8]))
    exact, _ = agreement(reference_scores, overall_scores(cand, pairs, 32, method))
    print(f"{method}: layer SNR dB {[round(x, 1) for x in snr]}, agreement {exact:.1%}")
    assert min(snr) > snr_floor and exact >= agreement_floor


def test_agreement_command(tmp_path, capsys):
    from quantize.agreement import main as agreement_main

    assert main(["--model", str(DEMO_MODEL), "--method", "bf16", "--output", str(tmp_path / "bf16")]) == 0
    assert agreement_main(["--reference", str(DEMO_MODEL), "--bundles", str(tmp_path / "bf16"), "--pairs", "8",
                           "--json", str(tmp_path / "a.json")]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| bf16 ")][0]
    assert "| 100.0% | 100.0% | inf |" in row  # 16-bit weights computed in fp32 on both sides
    assert agreement_main(["--reference", str(DEMO_MODEL), "--bundles", str(tmp_path)]) == 1
    assert "not a bundle" in capsys.readouterr().err
