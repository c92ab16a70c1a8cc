"""The vision tower alone (SigLIP cut at hidden_states[-2] + projector, `runtime.model.vision`) with
random weights of a published shape: ms per image at each batch size, PyTorch SDPA against eager
attention, and onnxruntime's CUDA provider where that build is installed.

    python -m bench.tower --shape full|reduced|tiny [--device cuda] [--batch-sizes 1,32] [--dtype bf16]

Prints one JSON object. The ONNX column needs `onnxruntime-gpu` (its CUDA provider); the GPU test
machine has only onnxruntime's CPU build and its wheel (~250 MB) exceeds what a device run can
carry, so there the column says why it is absent rather than timing the CPU provider.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from runtime.defaults import DTYPE_NAMES, default_device

SHAPE_NAMES = ("full", "reduced", "tiny")  # bench.synthetic.checkpoints.SHAPES, for the parser (tests/test_help.py)


def onnx_cuda_note() -> str | None:
    """None when onnxruntime's CUDA provider is available, else why not."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return ("onnxruntime here is the CPU build (no CUDAExecutionProvider); onnxruntime-gpu (~250 MB) is too big "
                "to carry to the GPU machine (64 MiB)")
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tower", description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=SHAPE_NAMES, default="full")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--attention", default="sdpa,eager", help="attention implementations to time")
    args = p.parse_args(argv)
    args.device = args.device or default_device()
    import torch  # after parsing: --help answers at once

    from bench.ceilings import timed
    from bench.synthetic.checkpoints import SHAPES, configs
    from runtime.model.checkpoint import DTYPES
    from runtime.model.vision import VisionEncoder

    spec = SHAPES[args.shape]
    llm_cfg, vis_cfg = configs(spec, vocab=64)
    dtype = DTYPES[args.dtype]
    side = spec.image_size
    r = {"shape": args.shape, "device": args.device, "dtype": args.dtype, "image_size": side,
         "image_tokens": (side // spec.patch_size) ** 2, "attention": {}, "onnx_cuda": onnx_cuda_note()}
    torch.manual_seed(0)
    with torch.device(args.device):
        base = VisionEncoder(vis_cfg, llm_cfg.hidden_size).to(dtype).eval()
    state = base.state_dict()
    for attn in args.attention.split(","):
        with torch.device(args.device):
            enc = VisionEncoder(vis_cfg, llm_cfg.hidden_size, attn_implementation=attn).to(dtype).eval()
        enc.load_state_dict(state)
        r["attention"][attn] = {}
        for b in (int(x) for x in args.batch_sizes.split(",")):
            pixels = torch.randn(b, 3, side, side, device=args.device, dtype=dtype)
            try:
                with torch.inference_mode():
                    ms = timed(lambda: enc(pixels), args.device, args.repeats)
            except torch.OutOfMemoryError:
                r["attention"][attn][str(b)] = {"error": "out of memory"}
                break
            r["attention"][attn][str(b)] = {"ms_per_batch": ms, "ms_per_image": [x / b for x in ms]}
            print(f"  tower {attn} batch {b}: {statistics.median(ms) / b:.2f} ms/image", file=sys.stderr)
        del enc
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
