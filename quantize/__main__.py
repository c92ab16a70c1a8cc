"""`python -m quantize`: an AITQE checkpoint -> a runnable, self-describing bundle.

    python -m quantize --model SRC --method {bf16,fp16,bnb-int8,bnb-nf4,gptq-int8,gptq-int4,fp8}
        [--vision torch|onnx|onnx-fp16[,...]] [--calibration FILE] --output BUNDLE [--force] [method options]

--vision: the vision encoder's format(s); the first is what the runtime runs, the others are kept
for `python -m runtime.score --vision-backend` (e.g. `onnx,torch`).

fp8 stores the 16-bit backbone and converts it to float8 as it loads, on a GPU of compute
capability >= 8.9 only.

Prints the bundle's size, the backbone's bits per weight and the wall time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quantize.backbone import CalibrationOptions, add_calibration_args
from quantize.options import add_method_args, method_config
from quantize.vision import VISION
from runtime.errors import InputError
from runtime.model.hub import resolve_model


def vision_formats(text: str) -> tuple[str, ...]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in VISION]
    if not names or bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more (comma-separated, no repeats) of "
                                         + ", ".join(VISION))
    return tuple(names)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True,
                   help="AITQE checkpoint folder (16-bit), or a Hub model ORG/NAME[@REVISION]")
    p.add_argument("--output", required=True, help="bundle folder to write")
    p.add_argument("--vision", type=vision_formats, default=("torch",),
                   help="vision encoder format(s): torch (16-bit), onnx (fp32), onnx-fp16; the first is run by default")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--device", default="cpu", help="where to quantize (cpu, cuda)")
    add_method_args(p)
    add_calibration_args(p)
    args = p.parse_args(argv)
    from quantize.bundle import build_bundle, bundle_bytes  # after parsing: --help answers at once

    try:
        manifest = build_bundle(resolve_model(args.model), args.method, method_config(args), args.output,
                                vision=args.vision, calibration=CalibrationOptions.from_args(args),
                                device=args.device, force=args.force)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    output = Path(args.output)
    print(f"wrote {output}: {args.method}, bundle {bundle_bytes(output) / 2**20:.1f} MiB "
          f"(backbone {bundle_bytes(output, 'backbone/') / 2**20:.1f} MiB, "
          f"{manifest.backbone.bits_per_weight:.2f} bits/weight), {manifest.quantize_seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
