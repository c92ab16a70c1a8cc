"""Decode attention probe: `python -m bench.attention [--shape full|tiny] [--device cuda|cpu]`.

For the fast engine's exact decode shapes (one query per slot over the whole cache, a boolean mask,
grouped KV heads), which backend SDPA picks, and ms per call of masked GQA SDPA (what the engine ran
before), of SDPA forced to its math backend, and of `runtime.engine.step.decode_attention` (the
engine's: grouped matmuls in the model dtype, fp32 softmax), all 28 layers' worth per call
(`--layers`). One JSON line per (slots, length) as it is measured (stdout, and --out when given), so a
run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys

from typing import TYPE_CHECKING

from runtime.defaults import default_device

if TYPE_CHECKING:
    import torch

SHAPE_NAMES = ("full", "tiny")  # shapes()'s, for the parser (tests/test_help.py)


def shapes() -> dict[str, tuple[int, int, int]]:
    """(heads, kv heads, head dim) by shape name: AITQE's Qwen2-7B and the demo model's."""
    from runtime.model.config import QWEN2_7B

    return {"full": (QWEN2_7B["num_attention_heads"], QWEN2_7B["num_key_value_heads"],
                     QWEN2_7B["hidden_size"] // QWEN2_7B["num_attention_heads"]),
            "tiny": (4, 2, 64)}


def picked(q, k, v, mask) -> str:
    """The backend SDPA picks for these inputs (masked, GQA)."""
    import torch
    from torch.nn.attention import SDPBackend

    try:
        return SDPBackend(torch._fused_sdp_choice(q, k, v, attn_mask=mask, enable_gqa=True)).name
    except Exception as e:  # a private call: say what it raised rather than fail the probe
        return f"unknown ({type(e).__name__})"


def probe(shape: str, slots: int, length: int, device: str, dtype: torch.dtype, layers: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from bench.ceilings import timed
    from runtime.engine.step import decode_attention

    heads, kv_heads, d = shapes()[shape]
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(slots, heads, 1, d, device=device, dtype=dtype, generator=g)
    k, v = (torch.randn(slots, kv_heads, length, d, device=device, dtype=dtype, generator=g) for _ in range(2))
    positions = torch.randint(0, length, (slots,), device=device, generator=g)
    mask = (torch.arange(length, device=device)[None] <= positions[:, None])[:, None, None]

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def math():
        with sdpa_kernel(SDPBackend.MATH):
            return sdpa()

    def grouped():
        return decode_attention(q, k, v, mask)

    gap = (grouped().float() - math().float()).abs().max().item()
    row = {"shape": shape, "slots": slots, "length": length, "dtype": str(dtype).removeprefix("torch."),
           "sdpa_backend": picked(q, k, v, mask), "max_abs_diff_vs_math": gap}
    for name, fn in (("sdpa", sdpa), ("math", math), ("grouped", grouped)):
        def layered(fn=fn):
            for _ in range(layers):
                fn()
        row[f"{name}_ms"] = round(min(timed(layered, device, repeats)), 3)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.attention", description=__doc__.split("\n\n")[1])
    p.add_argument("--shape", choices=SHAPE_NAMES, default="full")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--slots", default="1,16,64", help="comma-separated slot counts")
    p.add_argument("--lengths", default="1280", help="comma-separated cache lengths")
    p.add_argument("--layers", type=int, help="calls per timing (default: Qwen2-7B's layer count)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="also append each JSON line to this file")
    args = p.parse_args(argv)
    import torch  # after parsing: --help answers at once

    from runtime.model.config import QWEN2_7B

    args.device = args.device or default_device()
    args.layers = QWEN2_7B["num_hidden_layers"] if args.layers is None else args.layers
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    for slots in map(int, args.slots.split(",")):
        for length in map(int, args.lengths.split(",")):
            line = json.dumps(probe(args.shape, slots, length, args.device, dtype, args.layers, args.repeats))
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
