"""The vision side of a bundle: SigLIP cut at hidden_states[-2] + projector, pixels -> embeddings.

`torch` format: the runtime's `VisionEncoder` weights (16-bit safetensors) and the SigLIP config.
`onnx` format: one ONNX graph, fp32 or fp16, validated at export (see quantize/vision_onnx.py).

    python -m quantize.vision --model SRC --output DIR [--format onnx|torch] [--dtype fp32|fp16|bf16]
    python -m quantize.vision --synthetic so400m --output DIR [--dtype fp32|fp16]   # random weights

The folder is written atomically; an existing one is replaced unless it holds something else.
An ONNX export prints its checks, its parity with the PyTorch tower and (unless --no-latency) the
CPU latency per image of onnxruntime vs PyTorch; exit 1 with one line if parity is not reached.
What a bundle's ONNX tower does to verdicts: `python -m bench` with that bundle as a candidate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.atomic import atomic_folder
from runtime.defaults import DTYPE_NAMES
from runtime.errors import InputError
from runtime.model.hub import resolve_model
from runtime.model.locate import check_replaceable

if TYPE_CHECKING:  # the model code is imported where it runs, after parsing: --help answers at once
    from runtime.formats.manifest import Vision
    from runtime.model.checkpoint import Checkpoint

FORMATS = {"torch": DTYPE_NAMES, "onnx": ("fp32", "fp16")}
VISION = ("torch", "onnx", "onnx-fp16")  # a bundle's vision formats (python -m quantize --vision)


def export_torch(ck: Checkpoint, out: Path, dtype: str = "bf16") -> Vision:
    """Write vision/config.json + vision/model.safetensors; returns the manifest's vision entry."""
    from safetensors.torch import save_file

    from runtime.formats.manifest import Vision
    from runtime.model.checkpoint import DTYPES

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(ck.config.vision.to_json_string())
    state = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in ck.vision.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    return Vision(format="torch", dtype=dtype, path=out.name)


def export_vision(ck: Checkpoint, out: Path, fmt: str, dtype: str) -> Vision:
    """One format of the checkpoint's vision encoder into `out`; the manifest's vision entry."""
    if fmt == "torch":
        return export_torch(ck, out, dtype)
    from quantize.vision_onnx import export_onnx

    return export_onnx(ck.vision, ck.config.vision, ck.config.image, out, dtype)


def run_export(args: argparse.Namespace) -> int:
    from quantize.vision_onnx import export_onnx, latency, peak_rss_gib, synthetic_tower
    from runtime.model.checkpoint import load_checkpoint

    fmt = args.format or "onnx"
    dtype = args.dtype or FORMATS[fmt][0]
    if dtype not in FORMATS[fmt]:
        raise InputError(f"--dtype {dtype} is not available for the {fmt} format; use one of {', '.join(FORMATS[fmt])}")
    out, start = Path(args.output), time.perf_counter()
    if args.synthetic and fmt != "onnx":
        raise InputError("--synthetic exports ONNX only; drop --format torch")
    check_replaceable(out, "checkpoint", "a vision export (config.json)", force=True)
    with atomic_folder(out) as tmp:
        if args.synthetic:
            enc, vcfg, spec = synthetic_tower(args.synthetic)
            entry = export_onnx(enc, vcfg, spec, tmp, dtype)
        else:
            ck = load_checkpoint(resolve_model(args.model))
            enc, spec = ck.vision, ck.config.image
            entry = export_vision(ck, tmp, fmt, dtype)
    print(f"wrote {out}: vision encoder, {entry.format} {entry.dtype}, {time.perf_counter() - start:.1f}s, "
          f"peak memory {peak_rss_gib():.2f} GiB")
    if fmt == "onnx" and not args.no_latency:
        big = spec.size >= 224
        latency(enc, out / entry.file, spec, (1,) if big else (1, 8), 3 if big else 20)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize.vision", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="AITQE checkpoint folder, or a Hub model ORG/NAME[@REVISION]")
    src.add_argument("--synthetic", help="a random-weight tower of a published shape: so400m")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--format", choices=sorted(FORMATS), default=None, help="export format (default onnx)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None,
                   help="weights' dtype (default: fp32 for onnx, bf16 for torch)")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement after an ONNX export")
    args = p.parse_args(argv)
    try:
        return run_export(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
