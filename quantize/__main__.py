"""`python -m quantize`: an AITQE checkpoint -> a runnable, self-describing bundle.

    python -m quantize --model SRC --method {bf16,fp16,bnb-int8,bnb-nf4,gptq-int8,gptq-int4}
        [--vision torch|onnx|onnx-fp16[,...]] [--calibration FILE] --output BUNDLE [--force] [method options]

--vision: the vision encoder's format(s); the first is what the runtime runs, the others are kept
for `python -m runtime.score --vision-backend` (e.g. `onnx,torch`).

Prints the bundle's size, the backbone's bits per weight and the wall time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from quantize.backbone import (METHODS, add_calibration_args, add_method_args, calibration_for,
                               method_config, quantize_backbone)
from quantize.bundle import bundle_bytes, finish, staging_dir
from quantize.vision import export_vision
from runtime.checkpoint import fingerprint, load_checkpoint
from runtime.errors import InputError

VISION = ("torch", "onnx", "onnx-fp16")


def vision_spec(name: str, method: str) -> tuple[str, str]:
    """(format, dtype) of a --vision choice; the torch tower keeps the backbone's 16-bit type."""
    if name == "torch":
        return "torch", "fp16" if method == "fp16" else "bf16"
    return "onnx", "fp16" if name == "onnx-fp16" else "fp32"


def vision_formats(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in VISION]
    if not names or bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more (comma-separated, no repeats) of "
                                         + ", ".join(VISION))
    return names


def make_bundle(args: argparse.Namespace) -> tuple[Path, dict]:
    output = Path(args.output)
    config = method_config(args)
    tmp = staging_dir(output, args.force)
    start = time.perf_counter()
    try:
        ck = load_checkpoint(args.model)
        source = fingerprint(args.model)
        cal = calibration_for(args, ck, source) if METHODS[args.method].calibrated else None
        backbone = quantize_backbone(ck, args.method, config, tmp / "backbone", calibration=cal,
                                     device=args.device, work=tmp / ".work")
        entries = [export_vision(ck, tmp / "vision", *vision_spec(v, args.method)) for v in args.vision]
        vision = {**entries[0], **({"alternatives": entries[1:]} if entries[1:] else {})}
        ck.tokenizer.save_pretrained(tmp / "tokenizer")
        shutil.rmtree(tmp / ".work")
        cfg = ck.config
        manifest = finish(tmp, output, {
            "source": {"path": str(Path(args.model).resolve()), "fingerprint": source},
            "backbone": backbone, "vision": vision,
            "image": {**cfg.image.__dict__}, "image_tokens": cfg.image_tokens,
            "eos": {"ids": list(cfg.eos.ids), "source": cfg.eos.source}, "pad_token_id": cfg.pad_token_id,
            "note": (cfg.raw.get("aitqe_edge_demo") or {}).get("note"),
            "quantize_seconds": round(time.perf_counter() - start, 1),
        })
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output, manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="AITQE checkpoint folder (16-bit)")
    p.add_argument("--output", required=True, help="bundle folder to write")
    p.add_argument("--vision", type=vision_formats, default=["torch"],
                   help="vision encoder format(s): torch (16-bit), onnx (fp32), onnx-fp16; the first is run by default")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--device", default="cpu", help="where to quantize (cpu, cuda)")
    add_method_args(p)
    add_calibration_args(p)
    args = p.parse_args(argv)
    try:
        output, manifest = make_bundle(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    b = manifest["backbone"]
    print(f"wrote {output}: {args.method}, bundle {bundle_bytes(output) / 2**20:.1f} MiB "
          f"(backbone {bundle_bytes(output, 'backbone/') / 2**20:.1f} MiB, {b['bits_per_weight']:.2f} bits/weight), "
          f"{manifest['quantize_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
