"""Every variant against the 16-bit model, in one run: `python -m bench`.

    python -m bench --reference SRC --candidates BUNDLE [BUNDLE ...] [--pairs demo:200 | PAIRS.jsonl] --output DIR
    python -m bench --synthetic full|reduced|tiny [--methods bf16,bnb-int8,bnb-nf4,gptq-int4] --output DIR

With real models, on the evaluation pairs (`bench.eval.pairs`; a candidate calibrated on any of them
is refused): the reference (a 16-bit checkpoint or bf16/fp16 bundle) and each candidate write whole
verdicts (accuracy, `bench.eval`), then each variant's cost is measured in a process of its own
(`bench.cost`, which times `Scorer.score_batch` and `Scorer.score_stream`, the paths `python -m
runtime.score` runs), the first variant with every engine of --engines (fast vs reference). With
--synthetic, random-weight bundles of a published shape give the cost columns only. The machine's
copy bandwidth and matmul throughput are measured in the same run. Writes DIR/report.md,
DIR/results.json (rewritten after every step, so an interrupted run keeps what it measured) and PNG
plots, and prints the summary table last.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from tqdm import tqdm

try:
    from bench import ceilings, report
    from bench.eval.metrics import verdict_agreement
    from bench.eval.pairs import calibration_overlap, evaluation_pairs
    from bench.eval.teacher_forced import layer_snr, prompt_rows, teacher_forced
except ImportError as e:  # scipy, rouge-score, matplotlib
    sys.exit(f"error: python -m bench needs {e.name}; install it with: pip install -e '.[bench]'")
from bench.cost import CAPS_GIB
from quantize.bundle import bundle_bytes, versions
from runtime.atomic import write_text
from runtime.errors import InputError
from runtime.formats.manifest import read_manifest
from runtime.model.config import load_config
from runtime.model.locate import locate
from runtime.scorer import DEFAULT_MAX_NEW_TOKENS, ENGINES, Scorer


def environment(device: str) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or "?") if Path("/proc/cpuinfo").exists() else platform.processor()
    machine = f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        machine = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), " + machine
    return {"machine": machine, "platform": platform.platform(), "versions": versions(),
            "torch_threads": torch.get_num_threads()}


def describe(path: Path, what: str) -> dict:
    """Name, method, bits per backbone weight, disk bytes and image size of a checkpoint, bundle or GGUF
    export folder."""
    kind = locate(path, what, accept=("bundle", "checkpoint", "gguf")).kind
    if kind == "gguf":
        from bench.gguf import describe_gguf

        return describe_gguf(path)
    if kind == "bundle":
        m = read_manifest(path)
        return {"name": path.name, "path": str(path), "method": m.backbone.method,
                "bits_per_weight": m.backbone.bits_per_weight, "disk_bytes": bundle_bytes(path),
                "image_size": m.image.size, "calibration": None if m.calibration is None else m.calibration.source}
    return {"name": path.name, "path": str(path), "method": "checkpoint", "bits_per_weight": 16.0,
            "disk_bytes": bundle_bytes(path), "image_size": load_config(path).image.size}


def run_cost(args, variant: dict, pairs_file: Path, max_new_tokens: int, first: bool = False,
             lengths: str | None = None) -> None:
    """The variant's cost with each engine it runs (all of --engines for the first variant, the first
    engine for the others), each in a process of its own."""
    variant["costs"] = {}
    for engine in args.engines if first else args.engines[:1]:
        cmd = [sys.executable, "-m", "bench.cost", "--model", variant["path"], "--pairs", str(pairs_file),
               "--device", args.device, "--batch-sizes", args.batch_sizes, "--repeats", str(args.repeats),
               "--max-new-tokens", str(max_new_tokens), "--engine", engine, "--stream-pairs", str(args.stream_pairs),
               *(["--lengths", lengths] if lengths else [])]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            variant["costs"][engine] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            variant.setdefault("cost_error", lines[-1] if lines else f"exit status {proc.returncode}")
            print(f"  {variant['name']} ({engine} engine): cost failed: {variant['cost_error']}", file=sys.stderr)
    if args.engines[0] in variant["costs"]:
        variant["cost"] = variant["costs"][args.engines[0]]


def accuracy(args, r: dict, pairs, out: Path) -> None:
    """Accuracy of every candidate against the reference, on the evaluation pairs."""
    ref = Scorer.from_pretrained(args.reference, device=args.device, dtype=args.reference_dtype)
    ref_verdicts = ref.score_many(pairs, batch_size=args.batch_size, output_all=True, desc="reference")
    r["variants"][0]["accuracy"] = verdict_agreement(ref_verdicts, ref_verdicts, args.enhance_below)
    snr_rows = prompt_rows(ref, pairs[:args.snr_pairs])
    for v in r["variants"][1:]:
        cand = None
        try:
            cand = Scorer.from_pretrained(v["path"], device=args.device)
            verdicts = cand.score_many(pairs, batch_size=args.batch_size, output_all=True, desc=v["name"])
            v["accuracy"] = verdict_agreement(ref_verdicts, verdicts, args.enhance_below)
            if cand.llm is not None:  # a GGUF export's layers are llama.cpp's: no teacher-forced pass, no SNR
                v["teacher_forced"] = teacher_forced(ref, cand, pairs, ref_verdicts, max(1, args.batch_size // 2),
                                                     f"{v['name']} teacher-forced")
                v["layer_snr_db"] = layer_snr(ref.llm, cand.llm, snr_rows)
        except Exception as e:  # one broken candidate must not end a long benchmark: record it, go on
            v["accuracy_error"] = str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
        del cand
        gc.collect()
        report.write(r, out, CAPS_GIB, plots=False)


def model_variants(args, out: Path) -> tuple[list[dict], Path, list, str]:
    """The reference first, then the candidates, and the evaluation pairs; checked before anything runs."""
    ref = dict(describe(Path(args.reference), "--reference"), role="reference")
    if ref["method"] not in ("checkpoint", "bf16", "fp16"):
        raise InputError(f"--reference {args.reference}: a {ref['method']} bundle; the reference must be 16-bit "
                         "(a checkpoint or a bf16/fp16 bundle)")
    cands = [dict(describe(Path(c), "--candidates"), role="candidate") for c in args.candidates]
    pairs_file, source, pairs = evaluation_pairs(args.pairs, args.limit, ref["image_size"], out)
    for c in cands:
        bundle = c["method"] != "checkpoint" and not c["method"].startswith("gguf-")
        seen = calibration_overlap(read_manifest(c["path"]) if bundle else None, pairs)
        if seen:
            raise InputError(f"--candidates {c['path']}: calibrated on {len(seen)} of the evaluation pairs (e.g. "
                             f"{seen[0]!r}); evaluate it on pairs it was not calibrated on")
    return [ref, *cands], pairs_file, pairs, source


def synthetic_variants(args, r: dict, out: Path, work: Path) -> None:
    """Build, measure and delete each method's random-weight bundle in turn."""
    from bench.synthetic import NEW_TOKENS, SHAPES, synthetic_bundle, synthetic_checkpoint
    from runtime.formats import METHODS

    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise InputError(f"--methods: unknown {', '.join(unknown)}; use some of {', '.join(METHODS)}")
    print(f"writing a random {args.synthetic} checkpoint", file=sys.stderr)
    checkpoint = synthetic_checkpoint(args.synthetic, work / "checkpoint", args.device)
    pairs_file, source, _ = evaluation_pairs(f"demo:{max(map(int, args.batch_sizes.split(',')))}", None,
                                             SHAPES[args.synthetic].image_size, out)
    r["pairs"] = {"source": source, "count": None}
    r["variants"] = [{"name": f"{m} ({args.synthetic}, random)", "method": m, "synthetic": args.synthetic}
                     for m in methods]
    for v in tqdm(r["variants"], desc="synthetic bundles (build, cost, delete)", file=sys.stderr):
        bundle = work / v["method"]
        try:
            manifest = synthetic_bundle(checkpoint, v["method"], bundle, args.device)
            v.update(path=str(bundle), bits_per_weight=manifest.backbone.bits_per_weight,
                     disk_bytes=bundle_bytes(bundle))
            n = NEW_TOKENS[args.synthetic]
            run_cost(args, v, pairs_file, n, first=v is r["variants"][0], lengths=f"uniform:{max(1, n // 4)}:{n}")
        except Exception as e:  # one method that cannot be built (a missing library, out of memory) must not end the run
            v["cost_error"] = str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
        shutil.rmtree(bundle, ignore_errors=True)
        report.write(r, out, CAPS_GIB, plots=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--reference", help="16-bit AITQE checkpoint or bf16/fp16 bundle")
    p.add_argument("--candidates", nargs="+", default=[],
                   help="bundles from python -m quantize, GGUF exports (python -m quantize.export --format gguf)")
    p.add_argument("--pairs", default="demo:200", help="pairs JSONL (id, image, caption) or demo:N (default demo:200); "
                                                       "only its evaluation split is used")
    p.add_argument("--limit", type=int, help="use at most this many pairs of a JSONL file")
    p.add_argument("--synthetic", choices=["full", "reduced", "tiny"], help="random-weight bundles, cost only")
    p.add_argument("--methods", default="bf16,bnb-int8,bnb-nf4,gptq-int4", help="with --synthetic")
    p.add_argument("--output", required=True, help="folder for report.md, results.json and plots")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--reference-dtype", choices=["bf16", "fp16", "fp32"],
                   help="compute type of the reference for accuracy (default: fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of the accuracy runs")
    p.add_argument("--batch-sizes", help="batch sizes of the cost runs (default 1,4,16 on CPU, 1,8,32,64 on CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each cost measurement")
    p.add_argument("--snr-pairs", type=int, default=16, help="pairs whose hidden states give the layer SNR")
    p.add_argument("--enhance-below", type=int, default=6, help="replace the caption when the overall score is below this")
    p.add_argument("--engines", default="fast,reference",
                   help="decode engines to time: the first for every variant, all of them for the first variant")
    p.add_argument("--stream-pairs", type=int, help="pairs streamed per batch size for pairs/s (default 4 x the largest batch)")
    p.add_argument("--no-cost", action="store_true", help="accuracy only (real models)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    args.batch_sizes = args.batch_sizes or ("1,8,32,64" if args.device == "cuda" else "1,4,16")
    args.engines = args.engines.split(",")
    if set(args.engines) - set(ENGINES):
        p.error(f"--engines: use some of {', '.join(ENGINES)}")
    args.stream_pairs = args.stream_pairs or 4 * max(int(b) for b in args.batch_sizes.split(","))
    out = Path(args.output)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    if not args.synthetic and not (args.reference and args.candidates):
        p.error("give --reference and --candidates, or --synthetic")
    start = time.time()
    r = {
        "command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": args.device,
        "mode": "synthetic" if args.synthetic else "models", "synthetic": args.synthetic,
        "reference": args.reference, "enhance_threshold": args.enhance_below, "environment": environment(args.device),
        "workload": {"batch_sizes": args.batch_sizes, "repeats": args.repeats, "engines": args.engines,
                     "stream_pairs": args.stream_pairs}}
    try:
        if args.synthetic:
            r["ceilings"] = ceilings.measure(args.device)
            work = out / "synthetic-work"
            try:
                synthetic_variants(args, r, out, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        else:
            r["variants"], pairs_file, pairs, source = model_variants(args, out)
            r["pairs"] = {"source": source, "count": len(pairs), "file": str(pairs_file)}
            accuracy(args, r, pairs, out)
            if not args.no_cost:
                print("measuring the machine's copy bandwidth and matmul throughput", file=sys.stderr)
                r["ceilings"] = ceilings.measure(args.device)
                for v in tqdm(r["variants"], desc="cost (one process per variant)", file=sys.stderr):
                    run_cost(args, v, pairs_file, DEFAULT_MAX_NEW_TOKENS, first=v is r["variants"][0])
                    report.write(r, out, CAPS_GIB, plots=False)
        r["wall_s"] = time.time() - start
        files = report.write(r, out, CAPS_GIB, plots=not args.no_plots)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "results.json", json.dumps(r, indent=2, default=str))
        print(f"interrupted; what was measured is in {out / 'results.json'}", file=sys.stderr)
        return 130
    print("\n".join(report.main_table(r) + [""] + report.engine_table(r)))
    print(f"wrote {', '.join(str(out / f) for f in files)} in {r['wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
