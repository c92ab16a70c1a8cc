"""A **projection** (not a measurement) of ms per pair and pairs/s on consumer GPUs, from the work of
one pair and the fraction of peak that a measured run achieved on its own card.

    python -m bench.projection [DIR]    # a bench run's projection (DIR/results.json), or the H200 anchors'

Work of one pair at batch 1 (AITQE: T = image tokens + prompt tokens, n new tokens, L layers):
    prefill FLOPs  = linear FLOPs per token x T + 2 L T^2 d_q (causal attention: QK^T and AV)
                     + 2 d vocab (lm_head on the last position)
    decode bytes   = per step: backbone weights read (all but the input embedding table, in the
                     method's storage) + the KV cache read so far, 2 L d_kv x 2 bytes x context
Fraction of peak achieved on the measured card (its published peaks, `MEASURED`):
    e_prefill = prefill FLOPs / prefill s / peak FLOP/s   (bf16, or fp8 for the fp8 method)
    e_decode  = decode bytes per step / s per step / peak bytes/s
Projection on card C (published peaks, `CARDS`), the same fractions assumed:
    prefill_C = prefill FLOPs / (peak_C x e_prefill);  step_C = bytes / (bandwidth_C x e_decode)
    encode_C  = measured encode x bf16 peak ratio;      pair_C = encode_C + prefill_C + (n - 1) step_C
    pairs/s   = 1000 / pair_C (batch 1)
Memory: fits a cap when the measured peak at batch 1 + the CUDA context (`CONTEXT_GIB`) is below it.
Hand-written: the few lines of arithmetic that connect bench's measured columns to published specs.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
CONTEXT_GIB = 0.5  # CUDA context + cuBLAS workspace, not counted by torch's allocator


@dataclass(frozen=True)
class Card:
    name: str
    bf16_tflops: float          # dense tensor-core FP16/BF16 with FP32 accumulate
    fp8_tflops: float | None    # dense tensor-core FP8 with FP32 accumulate; None: no FP8 tensor cores
    bandwidth_gbs: float        # memory bandwidth, GB/s
    memory_gib: float
    capability: tuple[int, int]


# Published specs. GeForce figures: NVIDIA's architecture whitepapers, "Peak ... Tensor TFLOPS with FP32
# Accumulate" (dense, not the 2:4-sparse figure): Ampere GA102 whitepaper (RTX 3090: FP16/BF16 71),
# Ada Lovelace whitepaper (RTX 4090: FP16/BF16 165.2, FP8 330.3), Blackwell RTX whitepaper (RTX 5090:
# FP16/BF16 209.5, FP8 419); bandwidth and memory from the same documents (936 / 1008 / 1792 GB/s;
# 24 / 24 / 32 GB). Data-center figures: the H100 datasheet (SXM5: dense BF16 989.4, FP8 1978.9 TFLOP/s,
# 3350 GB/s; PCIe: 756.5, 1513, 2000 GB/s; 80 GB) and the H200 SXM datasheet (as H100 SXM, 4800 GB/s, 141 GB).
CARDS = {
    "RTX 3090": Card("RTX 3090", 71.0, None, 936.0, 24, (8, 6)),
    "RTX 4090": Card("RTX 4090", 165.2, 330.3, 1008.0, 24, (8, 9)),
    "RTX 5090": Card("RTX 5090", 209.5, 419.0, 1792.0, 32, (12, 0)),
}
MEASURED = {  # looked up by name in this order: the PCIe card before the SXM one
    "H100 PCIe": Card("H100 PCIe", 756.5, 1513.0, 2000.0, 80, (9, 0)),
    "H100": Card("H100 SXM", 989.4, 1978.9, 3350.0, 80, (9, 0)),
    "H200": Card("H200", 989.4, 1978.9, 4800.0, 141, (9, 0)),
}
CAPS_GIB = (8, 12, 16, 24)


def measured_card(machine: str) -> Card | None:
    """The published card behind a bench `environment.machine` string (None: not one listed here)."""
    return next((c for key, c in MEASURED.items() if key in machine), None)


@dataclass(frozen=True)
class PairWork:
    prefill_flops: float
    step_bytes: float           # mean bytes read per decode step
    steps: int                  # decode steps after the first token


def pair_work(*, linear_flops_per_token: float, tokens: int, new_tokens: int, layers: int, q_dim: int,
              kv_dim: int, hidden: int, vocab: int, decode_read_bytes: float, kv_bytes_per_value: int = 2) -> PairWork:
    """FLOPs of the prefill and mean bytes of a decode step of one pair (module docstring)."""
    prefill = linear_flops_per_token * tokens + 2 * layers * tokens**2 * q_dim + 2 * hidden * vocab
    mean_context = tokens + (new_tokens - 1) / 2
    kv = 2 * layers * kv_dim * kv_bytes_per_value * mean_context
    return PairWork(prefill, decode_read_bytes + kv, max(0, new_tokens - 1))


def peak_flops(card: Card, compute: str) -> float | None:
    """FLOP/s of the tensor cores a method computes on (fp8, else bf16); None: the card has none."""
    tflops = card.fp8_tflops if compute == "fp8" else card.bf16_tflops
    return None if tflops is None else tflops * 1e12


def efficiency(work: PairWork, prefill_ms: float, step_ms: float, card: Card, compute: str) -> tuple[float, float]:
    """(e_prefill, e_decode): the fractions of the card's published peaks a measured run achieved."""
    return (work.prefill_flops / (prefill_ms / 1000) / peak_flops(card, compute),
            work.step_bytes / (step_ms / 1000) / (card.bandwidth_gbs * 1e9))


def project(work: PairWork, eff: tuple[float, float], encode_ms: float, measured: Card, card: Card,
            compute: str) -> dict | None:
    """ms of each stage and pairs/s on `card` at the measured fractions of peak; None when the card
    cannot run the method (fp8 without FP8 tensor cores)."""
    peak = peak_flops(card, compute)
    if peak is None:
        return None
    prefill = 1000 * work.prefill_flops / (peak * eff[0])
    step = 1000 * work.step_bytes / (card.bandwidth_gbs * 1e9 * eff[1])
    encode = encode_ms * measured.bf16_tflops / card.bf16_tflops
    pair = encode + prefill + work.steps * step
    return {"encode_ms": encode, "prefill_ms": prefill, "step_ms": step, "pair_ms": pair, "pairs_per_s": 1000 / pair}


def fits(peak_bytes: float, cap_gib: float) -> bool:
    return peak_bytes / GIB + CONTEXT_GIB <= cap_gib


def work_of(cost: dict) -> PairWork:
    """The work of the measured batch-1 pair of a bench.cost result."""
    s = cost["backbone_shape"]
    steps = sorted(cost["batches"]["1"]["decode_steps"])[len(cost["batches"]["1"]["decode_steps"]) // 2]
    return pair_work(linear_flops_per_token=cost["linear_flops_per_token"],
                     tokens=cost["image_tokens"] + cost["prompt_tokens_first"], new_tokens=steps, layers=s["layers"],
                     q_dim=s["q_dim"], kv_dim=s["kv_dim"], hidden=s["hidden"], vocab=s["vocab"],
                     decode_read_bytes=cost["decode_read_bytes"])


def median(xs) -> float:
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def projection_rows(r: dict) -> list[str]:
    """The report's projection section: one row per GPU-measured variant; [] without a known card."""
    card = measured_card(r.get("environment", {}).get("machine", "")) if r.get("device") == "cuda" else None
    done = [v for v in r.get("variants", []) if (v.get("cost") or {}).get("backbone_shape")]
    if card is None or not done:
        return []
    names = list(CARDS)
    rows = ["| variant | e prefill | e decode | " + " | ".join(f"{n} ms/pair (pairs/s)" for n in names)
            + " | " + " | ".join(f"{g} GiB" for g in CAPS_GIB) + " |", "|" + "---|" * (3 + len(names) + len(CAPS_GIB))]
    for v in done:
        c = v["cost"]
        compute = "fp8" if v["method"] == "fp8" else "bf16"
        work = work_of(c)
        eff = efficiency(work, median(c["prefill_ms"]), median(c["decode_ms_per_step"]), card, compute)
        cells = []
        for n in names:
            p = project(work, eff, median(c["encode_ms_b1"]), card, CARDS[n], compute)
            cells.append("no FP8 tensor cores" if p is None else f"{p['pair_ms']:.0f} ({p['pairs_per_s']:.2f})")
        peak_b1 = c["batches"]["1"]["peak_bytes"]
        cells += ["yes" if fits(peak_b1, g) else "no" for g in CAPS_GIB]
        rows.append(f"| {v['name']} | {eff[0]:.0%} | {eff[1]:.0%} | " + " | ".join(cells) + " |")
    rows += ["", f"**Projection, not a measurement**: the fractions of {card.name}'s published peaks that this run "
             "achieved at batch 1 (e prefill: FLOPs; e decode: bytes), applied to each card's published peaks "
             "(" + "; ".join(f"{c.name}: BF16 {c.bf16_tflops} TFLOP/s, FP8 {c.fp8_tflops or '-'}, "
                             f"{c.bandwidth_gbs:.0f} GB/s, {c.memory_gib} GB" for c in CARDS.values()) + "). "
             "prefill_C = FLOPs / (peak_C x e prefill); step_C = bytes / (bandwidth_C x e decode); pair = encode "
             "(scaled by the BF16 peak ratio) + prefill + (n - 1) steps. Memory: the measured peak at batch 1 + "
             f"{CONTEXT_GIB} GiB CUDA context below the cap. Formula and spec sources: bench/projection.py."]
    return rows


# Measured anchors on one H200 (the README's "Which method for which card"; 2026-11-27, random weights of
# AITQE's shapes, 729 image + 42 prompt tokens, 64 new tokens): (prefill ms, decode ms/step) at batch 1.
# SigLIP tower 16.2 ms per image at batch 1; bf16 peak 14.4 GiB at batch 1.
H200_ANCHORS = {"bf16, eager": (38.6, 19.9), "bf16, compiled decode": (38.6, 6.2), "bnb-nf4, eager": (40.3, 30.9)}
TOWER_GIB, WORKSPACE_GIB = 0.8, 0.5  # so400m tower in bf16; activations and KV at batch 1
BITS = {"bf16": 16.0, "gptq-int8": 8.16, "gptq-int4": 4.16, "fp8": 8.0, "bnb-nf4": 4.127}  # per Linear weight


def qwen2_sizes(cfg: dict) -> dict:
    """What the projection needs of a Qwen2 config (`runtime.model.config.QWEN2_7B`): decoder Linear
    weights (q, k, v, o and the three MLP matrices per layer) and their FLOPs per token."""
    hidden, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    kv_dim = cfg["num_key_value_heads"] * hidden // cfg["num_attention_heads"]
    linear = layers * (2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * cfg["intermediate_size"])
    return dict(layers=layers, q_dim=hidden, kv_dim=kv_dim, hidden=hidden, vocab=cfg["vocab_size"],
                linear=linear, linear_flops_per_token=2 * linear)


def anchor_rows() -> list[str]:
    """The README's projection: the H200 anchors' fractions of peak on the consumer cards; gptq and fp8
    rows assume the compiled bf16 run's fractions (no run has measured them)."""
    from runtime.model.config import QWEN2_7B

    m, card = qwen2_sizes(QWEN2_7B), MEASURED["H200"]
    rows = ["| method | " + " | ".join(f"{n} ms/pair (pairs/s)" for n in CARDS) + " | fits "
            + " / ".join(str(c) for c in CAPS_GIB) + " GiB (estimate) |", "|" + "---|" * (len(CARDS) + 2)]
    cases = [(name, name.split(",")[0], H200_ANCHORS[name]) for name in H200_ANCHORS]
    cases += [(f"{k} (assumed)", k, H200_ANCHORS["bf16, compiled decode"]) for k in ("gptq-int8", "gptq-int4", "fp8")]
    for label, method, (prefill_ms, step_ms) in sorted(cases, key=lambda c: -BITS[c[1]]):
        emb = m["vocab"] * m["hidden"] * 2
        read = m["linear"] * BITS[method] / 8 + emb  # decode reads the body and lm_head, not the input table
        work = pair_work(linear_flops_per_token=m["linear_flops_per_token"], tokens=771, new_tokens=64,
                         layers=m["layers"], q_dim=m["q_dim"], kv_dim=m["kv_dim"], hidden=m["hidden"],
                         vocab=m["vocab"], decode_read_bytes=read)
        compute = "fp8" if method == "fp8" else "bf16"
        if "assumed" in label:  # the bf16 compiled run's fractions, applied to this method's work
            bf16 = PairWork(work.prefill_flops, work.step_bytes - read + m["linear"] * 2 + emb, work.steps)
            eff = efficiency(bf16, prefill_ms, step_ms, card, "bf16")
        else:
            eff = efficiency(work, prefill_ms, step_ms, card, compute)
        cells = []
        for c in CARDS.values():
            p = project(work, eff, 16.2, card, c, compute)
            cells.append("cannot run (no FP8)" if p is None else f"{p['pair_ms']:.0f} ({p['pairs_per_s']:.2f})")
        gib = (read + emb) / GIB + TOWER_GIB + WORKSPACE_GIB
        rows.append(f"| {label} | " + " | ".join(cells) + " | "
                    + " / ".join("yes" if fits(gib * GIB, cap) else "no" for cap in CAPS_GIB) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.projection [DIR]`: the projection of a bench run (DIR/results.json), or, without
    DIR, of the H200 anchors (the README's table)."""
    import argparse
    import json
    import sys
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m bench.projection", description=main.__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", help="folder of a python -m bench run (its results.json); default: the H200 anchors")
    args = p.parse_args(argv)
    if args.run:
        results = Path(args.run) / "results.json"
        if not results.is_file():
            print(f"error: {results}: no such file; pass the folder of a python -m bench run", file=sys.stderr)
            return 1
        rows = projection_rows(json.loads(results.read_text()))
    else:
        rows = anchor_rows()
    print("\n".join(rows) if rows else "no GPU run of a known card in this results.json: nothing to project")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
