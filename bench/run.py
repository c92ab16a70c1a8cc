"""The run behind `python -m bench` (the command, its flags and what it measures: bench/__main__.py)."""

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
from runtime.scorer import DEFAULT_MAX_NEW_TOKENS, Scorer


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


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    """The benchmark `args` ask for (parsed by bench/__main__.py); `argv` is recorded with the results."""
    out = Path(args.output)
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

