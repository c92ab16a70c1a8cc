"""The vision side of a bundle: SigLIP cut at hidden_states[-2] + projector, pixels -> embeddings.

`torch` format: the runtime's `VisionEncoder` weights (16-bit safetensors) and the SigLIP config;
the ONNX formats are added by the ONNX export.

    python -m quantize.vision --model SRC --output DIR [--dtype bf16|fp16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file

from runtime.checkpoint import DTYPES, Checkpoint, load_checkpoint
from runtime.errors import InputError


def export_torch(ck: Checkpoint, out: Path, dtype: str = "bf16") -> dict:
    """Write vision/config.json + vision/model.safetensors; returns the manifest's vision entry."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(ck.config.vision.to_json_string())
    state = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in ck.vision.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    return {"format": "torch", "dtype": dtype, "path": out.name}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize.vision", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="AITQE checkpoint folder")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    args = p.parse_args(argv)
    try:
        ck = load_checkpoint(args.model)
        entry = export_torch(ck, Path(args.output), args.dtype)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: vision encoder, {entry['format']} {entry['dtype']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
