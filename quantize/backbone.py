"""Backbone quantization: one registry of methods, each `quantize(dense_dir, out, config, calibration, device)`.

    python -m quantize.backbone --model SRC --method M --output DIR [method options]

writes only the backbone folder (a standard transformers Qwen2ForCausalLM folder); `python -m
quantize` writes a whole bundle. The 16-bit backbone is first saved as a plain folder, which every
method reads as its input.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from quantize import bnb_int8, bnb_nf4, dense, gptq
from runtime.checkpoint import Checkpoint
from runtime.errors import InputError


@dataclass(frozen=True)
class Method:
    run: Callable[..., dict]
    config: Callable[[argparse.Namespace], Any]
    calibrated: bool = False


def _gptq(bits: int) -> Callable[[argparse.Namespace], gptq.GptqConfig]:
    return lambda a: gptq.GptqConfig(bits=bits, group_size=a.group_size, act_order=a.act_order,
                                     sym=not a.asym, damp=a.damp)


METHODS: dict[str, Method] = {
    "bf16": Method(dense.quantize, lambda a: dense.DenseConfig("bf16")),
    "fp16": Method(dense.quantize, lambda a: dense.DenseConfig("fp16")),
    "bnb-int8": Method(bnb_int8.quantize, lambda a: bnb_int8.BnbInt8Config(a.int8_threshold, a.quantize_lm_head)),
    "bnb-nf4": Method(bnb_nf4.quantize, lambda a: bnb_nf4.BnbNf4Config(not a.no_double_quant, a.compute_dtype,
                                                                        a.quantize_lm_head)),
    "gptq-int8": Method(gptq.quantize, _gptq(8), calibrated=True),
    "gptq-int4": Method(gptq.quantize, _gptq(4), calibrated=True),
}


def add_method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, choices=list(METHODS))
    g = p.add_argument_group("method options")
    g.add_argument("--group-size", type=int, default=128, help="gptq: weights per scale (-1: per row)")
    g.add_argument("--act-order", action="store_true", help="gptq: act-order (desc_act)")
    g.add_argument("--asym", action="store_true", help="gptq: asymmetric grid (vLLM's Marlin needs symmetric)")
    g.add_argument("--damp", type=float, default=0.01, help="gptq: Hessian dampening")
    g.add_argument("--no-double-quant", action="store_true", help="bnb-nf4: do not quantize the scales")
    g.add_argument("--compute-dtype", choices=list(bnb_nf4.COMPUTE), default="bf16", help="bnb-nf4 matmul dtype")
    g.add_argument("--int8-threshold", type=float, default=6.0, help="bnb-int8 outlier threshold")
    g.add_argument("--quantize-lm-head", action="store_true", help="bnb: quantize lm_head too")


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration (gptq)")
    g.add_argument("--calibration", help="calibration file from python -m calibration; "
                                         "default: a built-in set of demo-world pairs run through --model")
    g.add_argument("--calibration-samples", type=int, default=128, help="size of the built-in set")
    g.add_argument("--calibration-text-only", action="store_true",
                   help="built-in set without image embeddings (for comparison only)")
    g.add_argument("--seed", type=int, default=0)


def calibration_for(args: argparse.Namespace, ck: Checkpoint, source_fingerprint: str):
    """The calibration set: the given file, or the built-in one made with the model's own tower."""
    from calibration.build import build, demo_world_pairs, load
    from runtime.scorer import Scorer

    if args.calibration:
        return load(args.calibration)
    scorer = Scorer.from_checkpoint(ck)
    return build(scorer, demo_world_pairs(args.calibration_samples, args.seed),
                 text_only=args.calibration_text_only, seed=args.seed,
                 source=f"built-in demo-world:seed={args.seed}", model_fingerprint=source_fingerprint)


def method_config(args: argparse.Namespace) -> Any:
    if args.quantize_lm_head and not args.method.startswith("bnb-"):
        raise InputError(f"--quantize-lm-head is supported by the bnb methods only, not {args.method}")
    try:
        return METHODS[args.method].config(args)
    except ValueError as e:
        raise InputError(str(e)) from e


def save_dense(ck: Checkpoint, folder: Path) -> Path:
    """The 16-bit backbone as a plain Qwen2ForCausalLM folder (+ tokenizer), every method's input."""
    ck.llm.save_pretrained(folder)
    ck.tokenizer.save_pretrained(folder)
    return folder


def quantize_backbone(ck: Checkpoint, method: str, config: Any, out: Path, *, calibration=None,
                      device: str = "cpu", work: Path) -> dict:
    """Write the backbone of `ck` quantized by `method` into `out`; returns the manifest entry."""
    m = METHODS[method]
    if m.calibrated and calibration is None:
        raise InputError(f"{method} needs a calibration set")
    dense_dir = save_dense(ck, work / "dense")
    if calibration is not None:  # the backbone's inputs, embedded by the 16-bit model
        calibration = (calibration.sequences(ck.llm.get_input_embeddings()), calibration.provenance)
    try:
        params = m.run(dense_dir, out, config, calibration, device)
    except ImportError as e:
        extra = "gptq" if method.startswith("gptq") else "gpu"
        raise InputError(f"{method} needs the package {e.name!r}; install it (see README, extra [{extra}])") from e
    for extra_file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                       "vocab.json", "merges.txt", "chat_template.jinja"):
        (out / extra_file).unlink(missing_ok=True)  # the bundle keeps one tokenizer, in tokenizer/
    weights = sum(p.numel() for p in ck.llm.parameters())
    stored = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    return {"method": method, "params": params, "path": out.name,
            "bits_per_weight": round(8 * stored / weights, 3), "weights": weights}


def main(argv: list[str] | None = None) -> int:
    import sys
    import tempfile

    from runtime.checkpoint import fingerprint, load_checkpoint

    p = argparse.ArgumentParser(prog="python -m quantize.backbone", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--device", default="cpu")
    add_method_args(p)
    add_calibration_args(p)
    args = p.parse_args(argv)
    try:
        config = method_config(args)
        ck = load_checkpoint(args.model)
        cal = calibration_for(args, ck, fingerprint(args.model)) if METHODS[args.method].calibrated else None
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=False)
        with tempfile.TemporaryDirectory() as work:
            entry = quantize_backbone(ck, args.method, config, out, calibration=cal, device=args.device,
                                      work=Path(work))
    except (InputError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
