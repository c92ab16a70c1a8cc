"""The backbone of a bundle: command-line options -> a method's config, its calibration set, and
`quantize_backbone` (the checkpoint's 16-bit backbone -> the method's folder).

    python -m quantize.backbone --model SRC --method M --output DIR [method options]

writes only the backbone folder (a standard transformers Qwen2ForCausalLM folder), atomically;
`python -m quantize` writes a whole bundle. The methods are `runtime.formats.METHODS`; each reads
the 16-bit backbone saved as a plain folder; their options come from their configs (quantize.options).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import InputError
from runtime.formats import method

if TYPE_CHECKING:  # the model code is imported where it runs, after parsing: --help answers at once
    from calibration.build import CalibrationSet
    from runtime.formats.manifest import Backbone
    from runtime.model.checkpoint import Checkpoint


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("calibration (gptq)")
    g.add_argument("--calibration", help="calibration file from python -m calibration; "
                                         "default: a built-in set of demo-world calibration pairs run through --model")
    g.add_argument("--calibration-samples", type=int, default=128, help="size of the built-in set")
    g.add_argument("--calibration-text-only", action="store_true",
                   help="built-in set without image embeddings (for comparison only)")
    g.add_argument("--seed", type=int, default=0)


@dataclass(frozen=True)
class CalibrationOptions:
    """Where a calibrated method's set comes from (the command line's calibration options)."""

    calibration: str | None = None       # a file from python -m calibration; None: the built-in set
    calibration_samples: int = 128
    calibration_text_only: bool = False
    seed: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CalibrationOptions:
        return cls(args.calibration, args.calibration_samples, args.calibration_text_only, args.seed)


def calibration_for(opts: CalibrationOptions, ck: Checkpoint, source_fingerprint: str) -> CalibrationSet:
    """The calibration set: the given file, or the built-in one made with the model's own tower."""
    from calibration.build import build, calibration_pairs, load
    from runtime.scorer import Scorer

    if opts.calibration:
        return load(opts.calibration)
    pairs, source = calibration_pairs(None, opts.calibration_samples, opts.seed)
    return build(Scorer.from_checkpoint(ck), pairs, text_only=opts.calibration_text_only, seed=opts.seed,
                 source=f"built-in {source}", model_fingerprint=source_fingerprint)


def save_dense(ck: Checkpoint, folder: Path) -> Path:
    """The backbone as a plain Qwen2ForCausalLM folder (+ tokenizer) in the checkpoint's stored dtype
    (exact: it was loaded from it), every method's input."""
    from runtime.model.checkpoint import stored_dtype

    stored = stored_dtype(ck.config)
    ck.llm.save_pretrained(folder, state_dict={k: v.to(stored) for k, v in ck.llm.state_dict().items()})
    ck.tokenizer.save_pretrained(folder)
    return folder


def quantize_backbone(ck: Checkpoint, name: str, config: Any, out: Path, *, calibration: CalibrationSet | None = None,
                      device: str = "cpu", work: Path, synthetic: bool = False) -> Backbone:
    """Write the backbone of `ck` quantized by method `name` into `out` (its synthetic variant, if asked);
    returns the manifest's backbone entry."""
    from runtime.formats.manifest import Backbone

    m = method(name)
    if m.calibrated and calibration is None and not synthetic:
        raise InputError(f"{name} needs a calibration set")
    dense_dir = save_dense(ck, work / "dense")
    try:
        if synthetic:
            params = m.make_synthetic(dense_dir, out, config, device)
        else:  # calibration rows: the backbone's inputs, embedded by the 16-bit model
            rows = calibration.sequences(ck.llm.get_input_embeddings()) if calibration is not None else None
            params = m.quantize(dense_dir, out, config, rows, device)
    except ImportError as e:
        raise InputError(f"{name} needs the package {e.name!r}; install it (see README: the extras)") from e
    except ValueError as e:
        raise InputError(str(e)) from e
    for extra_file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                       "vocab.json", "merges.txt", "chat_template.jinja"):
        (out / extra_file).unlink(missing_ok=True)  # the bundle keeps one tokenizer, in tokenizer/
    weights = sum(p.numel() for p in ck.llm.parameters())
    stored = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    bits = m.bits_per_weight(ck.llm, config) if m.bits_per_weight else 8 * stored / weights
    return Backbone(method=name, params=params, path=out.name, bits_per_weight=round(bits, 3), weights=weights)


def main(argv: list[str] | None = None) -> int:
    import sys
    import tempfile

    from quantize.options import add_method_args, method_config

    p = argparse.ArgumentParser(prog="python -m quantize.backbone", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="AITQE checkpoint folder, or a Hub model ORG/NAME[@REVISION]")
    p.add_argument("--output", required=True)
    p.add_argument("--device", default="cpu")
    add_method_args(p)
    add_calibration_args(p)
    args = p.parse_args(argv)
    from runtime.atomic import atomic_folder  # after parsing: --help answers at once
    from runtime.model.checkpoint import fingerprint, load_checkpoint
    from runtime.model.hub import resolve_model
    from runtime.model.locate import kind_of

    try:
        config = method_config(args)
        out = Path(args.output)
        if kind_of(out) != "missing":
            raise InputError(f"{out} already exists; choose another --output")
        args.model = str(resolve_model(args.model))
        ck = load_checkpoint(args.model)
        cal = (calibration_for(CalibrationOptions.from_args(args), ck, fingerprint(args.model))
               if method(args.method).calibrated else None)
        with tempfile.TemporaryDirectory() as work, atomic_folder(out) as tmp:
            entry = quantize_backbone(ck, args.method, config, tmp, calibration=cal, device=args.device,
                                      work=Path(work))
        entry = dataclasses.replace(entry, path=out.name)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(entry), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
