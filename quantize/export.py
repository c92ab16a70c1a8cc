"""`python -m quantize.export`: an AITQE checkpoint or GPTQ bundle -> a standard LLaVA folder, or a
checkpoint -> a GGUF export for llama.cpp.

    python -m quantize.export --model SRC --format llava-hf --output DIR [--force]
    python -m quantize.export --model SRC --format gguf --type f16|q8_0|q4_k_m|f32 --output DIR
                              [--with-vision torch,onnx] [--force]

The command; the exports themselves: `quantize.llava_export` (what the folder holds and why) and
`quantize.gguf`, imported once the arguments are parsed.
"""

from __future__ import annotations

import argparse
import sys

from runtime.errors import InputError
from runtime.model.hub import resolve_model

FORMATS = ("llava-hf", "gguf")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize.export", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="AITQE checkpoint folder, or a bundle of python -m quantize; "
                                                  "or either on the Hub: ORG/NAME[@REVISION]")
    p.add_argument("--format", default="llava-hf", choices=FORMATS, help="the layout to write")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--force", action="store_true", help="replace an existing export")
    p.add_argument("--type", default=None,
                   help="gguf: the language model's type: f16 (default), q8_0, q4_k_m (made by llama.cpp's "
                        "quantizer), f32")
    p.add_argument("--threads", type=int, default=0, help="gguf: threads for llama.cpp's quantizer (0: all cores)")
    p.add_argument("--with-vision", default="",
                   help="gguf: also write our own vision tower (torch, onnx or torch,onnx) for "
                        "python -m runtime.score --vision-backend")
    args = p.parse_args(argv)
    if args.format != "gguf" and (args.type is not None or args.threads):
        p.error("--type and --threads are for --format gguf")
    if args.format != "gguf" and args.with_vision:
        p.error("--with-vision is for --format gguf")
    from quantize.llava_export import export, export_gguf_folder  # after parsing: --help answers at once

    try:
        args.model = str(resolve_model(args.model))
        if args.format == "gguf":
            vision = tuple(v for v in args.with_vision.split(",") if v)
            return export_gguf_folder(args.model, args.output, args.type or "f16", args.force, args.threads, vision)
        info = export(args.model, args.output, fmt=args.format, force=args.force)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # never a traceback: one line naming what failed
        reason = " ".join(str(e).split()) or type(e).__name__
        print(f"error: exporting {args.model} to {args.output} failed ({type(e).__name__}: {reason}); "
              "check both paths", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {info['format']} from {info['source_kind']}; image token {info['image_token']} "
          f"= id {info['image_token_id']}, {info['image_token_row']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
