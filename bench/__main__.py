"""Every variant against the 16-bit model, in one run: `python -m bench`.

    python -m bench --reference SRC --candidates BUNDLE [BUNDLE ...] [--pairs demo:200 | PAIRS.jsonl] --output DIR
    python -m bench --synthetic full|reduced|tiny [--methods bf16,bnb-int8,bnb-nf4,gptq-int4] --output DIR

With real models: the reference (a 16-bit checkpoint or bf16/fp16 bundle) and then each candidate
score the same pairs (accuracy, `bench.accuracy`), then each variant's cost is measured in a process
of its own (`bench.cost`). With --synthetic, random-weight variants of a published shape give the
cost columns only. The machine's copy bandwidth and matmul throughput are measured in the same run.
Writes DIR/report.md, DIR/results.json (rewritten after every step, so an interrupted run keeps what
it measured) and PNG plots, and prints the summary table last.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from tqdm import tqdm

try:
    from bench import ceilings, report
    from bench.accuracy import teacher_forced, verdict_agreement
    from bench.cost import CAPS_GIB
except ImportError as e:  # scipy, rouge-score, matplotlib
    sys.exit(f"error: python -m bench needs {e.name}; install it with: pip install -e '.[bench]'")
from quantize.bundle import bundle_bytes, versions
from runtime.errors import InputError
from runtime.generate import cut_at_mark
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


def load_pairs(spec: str, limit: int | None, size: int):
    """`demo:N` (held-out demo-world pairs, seed 1000, rendered at `size`) or a pairs JSONL file."""
    if spec.startswith("demo:"):
        from runtime.demo.evaluate import held_out_pairs

        try:
            n = int(spec.removeprefix("demo:"))
        except ValueError:
            raise InputError(f"--pairs {spec}: write demo:N, e.g. demo:200") from None
        return held_out_pairs(n, 1000, size), "demo world, held-out seed 1000 (the demo model trained on seed 0)"
    from calibration.build import file_pairs

    if not Path(spec).is_file():
        raise InputError(f"--pairs {spec}: no such file; give a pairs JSONL (id, image, caption) or demo:N")
    return file_pairs(spec, limit or 10**9, 0), spec


def describe(path: Path) -> dict:
    """Name, method, bits per backbone weight and disk bytes of a checkpoint or bundle folder."""
    manifest = path / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        return {"name": path.name, "path": str(path), "method": m["backbone"]["method"],
                "bits_per_weight": m["backbone"].get("bits_per_weight"), "disk_bytes": bundle_bytes(path)}
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: not an AITQE checkpoint or bundle (no config.json or manifest.json)")
    return {"name": path.name, "path": str(path), "method": "checkpoint", "bits_per_weight": 16.0,
            "disk_bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file())}


def run_cost(args, variant: dict, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "bench.cost", "--device", args.device, "--batch-sizes", args.batch_sizes,
           "--repeats", str(args.repeats), *extra]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode == 0:
        variant["cost"] = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        variant["cost_error"] = lines[-1] if lines else f"exit status {proc.returncode}"
        print(f"  {variant['name']}: cost failed: {variant['cost_error']}", file=sys.stderr)


def accuracy(args, r: dict, out: Path) -> tuple[int, int]:
    """Accuracy of every candidate against the reference; returns the workload's (prompt, new) tokens."""
    ref = Scorer.from_pretrained(args.reference, device=args.device, dtype=args.reference_dtype)
    pairs, source = load_pairs(args.pairs, args.limit, ref.image_spec.size)
    r["pairs"] = {"source": source, "count": len(pairs)}
    ref_verdicts = ref.score_many(pairs, batch_size=args.batch_size, output_all=True, desc="reference")
    r["variants"][0]["accuracy"] = verdict_agreement(ref_verdicts, ref_verdicts, args.enhance_below)
    prompts = [len(ref.prepare(p, DEFAULT_MAX_NEW_TOKENS)[1]) for p, v in zip(pairs, ref_verdicts) if v.error is None]
    answers = [len(ref.tokenizer(cut_at_mark(v.raw_text), add_special_tokens=False)["input_ids"])
               for v in ref_verdicts if v.raw_text]
    for v in r["variants"][1:]:
        cand = None
        try:
            cand = Scorer.from_pretrained(v["path"], device=args.device)
            verdicts = cand.score_many(pairs, batch_size=args.batch_size, output_all=True, desc=v["name"])
            v["accuracy"] = verdict_agreement(ref_verdicts, verdicts, args.enhance_below)
            v["teacher_forced"] = teacher_forced(ref, cand, pairs, ref_verdicts, max(1, args.batch_size // 2),
                                                 f"{v['name']} teacher-forced")
        except Exception as e:  # one broken candidate must not end a long benchmark: record it, go on
            v["accuracy_error"] = str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
        del cand
        gc.collect()
        report.write(r, out, CAPS_GIB, plots=False)
    return int(statistics.median(prompts or [42])), max(2, int(statistics.median(answers or [64])))


def variants(args) -> list[dict]:
    """The variants to measure, checked before anything runs: the reference first."""
    if args.synthetic:
        from bench.synthetic import METHODS

        methods = args.methods.split(",")
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise InputError(f"--methods: unknown {', '.join(unknown)}; use some of {', '.join(METHODS)}")
        return [{"name": f"{m} ({args.synthetic}, random)", "method": m, "synthetic": args.synthetic} for m in methods]
    ref = dict(describe(Path(args.reference)), role="reference")
    if ref["method"] not in ("checkpoint", "bf16", "fp16"):
        raise InputError(f"--reference {args.reference}: a {ref['method']} bundle; the reference must be 16-bit "
                         "(a checkpoint or a bf16/fp16 bundle)")
    return [ref] + [dict(describe(Path(c)), role="candidate") for c in args.candidates]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--reference", help="16-bit AITQE checkpoint or bf16/fp16 bundle")
    p.add_argument("--candidates", nargs="+", default=[], help="bundles from python -m quantize")
    p.add_argument("--pairs", default="demo:200", help="pairs JSONL (id, image, caption) or demo:N (default demo:200)")
    p.add_argument("--limit", type=int, help="use at most this many pairs of a JSONL file")
    p.add_argument("--synthetic", choices=["full", "reduced", "tiny"], help="random-weight shapes, cost only")
    p.add_argument("--methods", default="bf16,bnb-int8,bnb-nf4,gptq-int4", help="with --synthetic")
    p.add_argument("--output", required=True, help="folder for report.md, results.json and plots")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--reference-dtype", choices=["bf16", "fp16", "fp32"],
                   help="compute type of the reference for accuracy (default: fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of the accuracy runs")
    p.add_argument("--batch-sizes", help="batch sizes of the cost runs (default 1,4,16 on CPU, 1,8,32,64 on CUDA)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each cost measurement")
    p.add_argument("--enhance-below", type=int, default=6, help="replace the caption when the overall score is below this")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    args.batch_sizes = args.batch_sizes or ("1,8,32,64" if args.device == "cuda" else "1,4,16")
    out = Path(args.output)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    if not args.synthetic and not (args.reference and args.candidates):
        p.error("give --reference and --candidates, or --synthetic")
    start = time.time()
    r = {"command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
         "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "device": args.device,
         "mode": "synthetic" if args.synthetic else "models", "synthetic": args.synthetic,
         "reference": args.reference, "enhance_threshold": args.enhance_below, "environment": environment(args.device)}
    try:
        r["variants"] = variants(args)
        print("measuring the machine's copy bandwidth and matmul throughput", file=sys.stderr)
        r["ceilings"] = ceilings.measure(args.device)
        if not args.synthetic:
            workload = accuracy(args, r, out)
        for v in tqdm(r["variants"], desc="cost (one process per variant)", file=sys.stderr):
            if args.synthetic:
                run_cost(args, v, ["--synthetic", args.synthetic, "--method", v["method"]])
            else:
                run_cost(args, v, ["--model", v["path"], "--text-tokens", str(workload[0]),
                                   "--new-tokens", str(workload[1])])
            report.write(r, out, CAPS_GIB, plots=False)
        first = next((v["cost"] for v in r["variants"] if v.get("cost")), {})
        r["workload"] = {"image_tokens": first.get("image_tokens", "?"), "text_tokens": first.get("text_tokens", "?"),
                         "new_tokens": first.get("new_tokens", "?"), "batch_sizes": args.batch_sizes,
                         "repeats": args.repeats}
        r["wall_s"] = time.time() - start
        files = report.write(r, out, CAPS_GIB, plots=not args.no_plots)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(r, indent=2, default=str))
        print(f"interrupted; what was measured is in {out / 'results.json'}", file=sys.stderr)
        return 130
    print("\n".join(report.main_table(r)))
    print(f"wrote {', '.join(str(out / f) for f in files)} in {r['wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
