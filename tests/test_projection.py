"""The consumer-GPU projection (bench.projection) against values computed by hand."""

from __future__ import annotations

import math

from bench.projection import CARDS, Card, PairWork, efficiency, fits, pair_work, project, projection_rows

A = Card("A", 100.0, 200.0, 1000.0, 80, (9, 0))     # measured card: 1e14 FLOP/s bf16, 1e12 B/s
B = Card("B", 50.0, None, 500.0, 8, (8, 6))         # target card without FP8


def test_pair_work_by_hand():
    w = pair_work(linear_flops_per_token=100, tokens=10, new_tokens=5, layers=2, q_dim=4, kv_dim=2, hidden=3,
                  vocab=7, decode_read_bytes=1000)
    # prefill: 100*10 + 2*2*10^2*4 + 2*3*7 = 1000 + 1600 + 42; KV: 2*2 layers*2 dims*2 bytes*(10 + 4/2) = 192
    assert w == PairWork(2642, 1192, 4)


def test_efficiency_and_projection_by_hand():
    work = PairWork(prefill_flops=1e12, step_bytes=1e9, steps=10)
    eff = efficiency(work, prefill_ms=20, step_ms=2, card=A, compute="bf16")
    assert all(math.isclose(e, 0.5) for e in eff)  # 1e12 / 0.02 s / 1e14; 1e9 / 0.002 s / 1e12
    p = project(work, eff, encode_ms=10, measured=A, card=B, compute="bf16")
    # prefill 1e12 / (5e13 * 0.5) = 40 ms; step 1e9 / (5e11 * 0.5) = 4 ms; encode 10 * 100 / 50 = 20 ms
    assert math.isclose(p["prefill_ms"], 40) and math.isclose(p["step_ms"], 4) and math.isclose(p["encode_ms"], 20)
    assert math.isclose(p["pair_ms"], 100) and math.isclose(p["pairs_per_s"], 10)
    fp8_eff = efficiency(work, prefill_ms=10, step_ms=2, card=A, compute="fp8")
    assert math.isclose(fp8_eff[0], 0.5)  # against the FP8 peak, 2e14
    assert project(work, fp8_eff, 10, A, B, "fp8") is None  # no FP8 tensor cores on B


def test_memory_fit_counts_the_cuda_context():
    gib = 2**30
    assert fits(7.4 * gib, 8) and not fits(7.6 * gib, 8) and fits(23.5 * gib, 24)


def test_published_specs_are_ordered_as_the_cards():
    c3090, c4090, c5090 = CARDS["RTX 3090"], CARDS["RTX 4090"], CARDS["RTX 5090"]
    assert c3090.fp8_tflops is None and c4090.capability >= (8, 9) and c5090.capability >= (8, 9)
    assert c3090.bf16_tflops < c4090.bf16_tflops < c5090.bf16_tflops
    assert math.isclose(c4090.fp8_tflops, 2 * c4090.bf16_tflops, rel_tol=1e-3) and c5090.bandwidth_gbs > c4090.bandwidth_gbs


def test_report_section_only_for_a_known_gpu():
    cost = {"backbone_shape": {"layers": 2, "q_dim": 4, "kv_dim": 2, "hidden": 3, "vocab": 7},
            "linear_flops_per_token": 100, "image_tokens": 6, "prompt_tokens_first": 4, "decode_read_bytes": 1000,
            "batches": {"1": {"decode_steps": [5, 5], "peak_bytes": 6 * 2**30}},
            "prefill_ms": [1e-6, 1e-6], "decode_ms_per_step": [1e-6, 1e-6], "encode_ms_b1": [1.0, 1.0]}
    r = {"device": "cuda", "environment": {"machine": "NVIDIA H200 (140 GiB), ..."},
         "variants": [{"name": "x", "method": "fp8", "cost": cost}]}
    rows = projection_rows(r)
    assert "no FP8 tensor cores" in rows[2] and "Projection, not a measurement" in rows[-1]
    assert rows[2].endswith("| yes | yes | yes | yes |")
    assert projection_rows({**r, "device": "cpu"}) == []
    assert projection_rows({**r, "environment": {"machine": "some other GPU"}}) == []


def test_measured_card_by_name():
    from bench.projection import measured_card

    assert measured_card("NVIDIA H100 PCIe (79 GiB), x86").name == "H100 PCIe"
    assert measured_card("NVIDIA H100 80GB HBM3 (79 GiB), x86").name == "H100 SXM"
    assert measured_card("NVIDIA H200 (140 GiB), x86").bandwidth_gbs == 4800.0
    assert measured_card("NVIDIA A100-SXM4-80GB") is None


def test_anchor_projection_reduces_to_peak_ratios():
    """With the same work on both cards, the projection is the measured time scaled by the ratio of
    peaks: RTX 5090 bf16 eager = (16.2 + 38.6) x 989.4 / 209.5 + 63 x 19.9 x 4800 / 1792 ms (by hand)."""
    from bench.projection import anchor_rows

    row = next(r for r in anchor_rows() if r.startswith("| bf16, eager |"))
    expected = (16.2 + 38.6) * 989.4 / 209.5 + 63 * 19.9 * 4800 / 1792
    assert f"{expected:.0f} ({1000 / expected:.2f})" in row.split("|")[4]  # the RTX 5090 column
    fp8 = next(r for r in anchor_rows() if r.startswith("| fp8"))
    assert "cannot run" in fp8.split("|")[2]


def test_qwen2_7b_sizes_by_hand():
    """Qwen2-7B: per layer q and o 3584x3584, k and v 3584x512, three MLP matrices 3584x18944."""
    from bench.projection import qwen2_sizes
    from runtime.model.config import QWEN2_7B

    per_layer = 2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944
    m = qwen2_sizes(QWEN2_7B)
    assert m["linear"] == 28 * per_layer == 6_525_288_448  # the README's "6.53 B decoder Linear weights"
    assert (m["kv_dim"], m["linear_flops_per_token"]) == (512, 2 * m["linear"])
