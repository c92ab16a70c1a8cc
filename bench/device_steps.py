"""The python side of `bench/device_check.sh`: `python -m bench.device_steps preflight|inputs|bundle|record|trim ...`.

preflight: one JSON object on stdout (card, driver, CUDA, cuDNN, free disk and memory, compilers, library
versions, and which SDPA backend torch picks for the fast engine's exact decode and prefill shapes).
inputs SHAPE WORK DEVICE N: a random checkpoint of SHAPE at WORK/checkpoint and N demo pairs at WORK/pairs.
bundle CHECKPOINT METHOD FOLDER DEVICE: the method's synthetic bundle of that checkpoint.
record OUT NAME RC SECONDS BUDGET RESULT LOG: append one line to OUT/results.jsonl: the step, its exit,
its time and budget, what its result file holds (partial or whole, JSON or JSON lines), and the last
`error:` line of its log; so a run cut short keeps every step before it.
trim WHEEL KEEP...: rewrite WHEEL without the shared libraries (*.so) whose names hold none of KEEP
(bench/fetch_wheels.sh: bitsandbytes' CUDA 13 build only, what the device's torch loads); prints the sizes.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

LIBRARIES = ("torch", "transformers", "gptqmodel", "torchao", "bitsandbytes", "triton", "onnxruntime", "onnxruntime-gpu")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _driver() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def preflight(folders: list[str]) -> dict:
    import torch

    from bench.attention import SHAPES, picked
    cuda = torch.cuda.is_available()
    r = {"torch": torch.__version__, "cuda": torch.version.cuda, "driver": _driver(),
         "cudnn": torch.backends.cudnn.version() if cuda else None,
         "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
         "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
         "cuda_free_gib": torch.cuda.mem_get_info()[0] / 2**30 if cuda else None,
         "host_available_gib": os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30,
         "cpus": os.cpu_count(), "nvcc": shutil.which("nvcc"), "cc": shutil.which("cc") or shutil.which("gcc"),
         "disk_free_gib": {f: shutil.disk_usage(f).free / 2**30 for f in folders},
         "libraries": {name: _version(name) for name in LIBRARIES}}
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    heads, kv_heads, d = SHAPES["full"]
    picks = {}
    for n in (1, 16, 64):
        q = torch.zeros(n, heads, 1, d, device=device, dtype=dtype)
        k = torch.zeros(n, kv_heads, 1280, d, device=device, dtype=dtype)
        mask = torch.ones(n, 1, 1, 1280, dtype=torch.bool, device=device)
        picks[f"decode n={n} L=1280 masked gqa"] = picked(q, k, k, mask)
    q, k = torch.zeros(1, heads, 800, d, device=device, dtype=dtype), torch.zeros(1, kv_heads, 800, d, device=device, dtype=dtype)
    try:
        from torch.nn.attention import SDPBackend
        picks["prefill 800 causal gqa"] = SDPBackend(torch._fused_sdp_choice(q, k, k, is_causal=True, enable_gqa=True)).name
    except Exception as e:  # a private call: say what it raised
        picks["prefill 800 causal gqa"] = f"unknown ({type(e).__name__})"
    r["sdpa_backend"] = picks
    return r


def inputs(shape: str, work: Path, device: str, n: int) -> None:
    from bench.eval.pairs import evaluation_pairs
    from bench.synthetic import synthetic_checkpoint
    from bench.synthetic.checkpoints import SHAPES
    synthetic_checkpoint(shape, work / "checkpoint", device)
    evaluation_pairs(f"demo:{n}", None, SHAPES[shape].image_size, work / "pairs")


def bundle(checkpoint: str, name: str, folder: str, device: str) -> None:
    from bench.synthetic import synthetic_bundle
    synthetic_bundle(Path(checkpoint), name, Path(folder), device)


def trim(wheel: Path, keep: list[str]) -> tuple[int, int]:
    """Drop from `wheel` (in place) every *.so whose file name holds none of `keep`, and its RECORD line;
    (bytes before, bytes after)."""
    import zipfile

    def kept(name: str) -> bool:
        return not name.endswith(".so") or any(k in name.rsplit("/", 1)[-1] for k in keep)

    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".trim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if not kept(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(keepends=True)
                               if kept(line.split(",", 1)[0])).encode()
            dst.writestr(info, data)
    tmp.replace(wheel)
    return before, wheel.stat().st_size


def _result(path: Path):
    try:
        text = path.read_text()
    except OSError:
        return None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except ValueError:
            return None
    lines = []  # JSON lines (a probe): those written whole
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            break
    return lines or None


def _error(log: Path) -> str | None:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((x for x in reversed(lines) if x.startswith("error:")), None)


def record(out: Path, name: str, rc: int, seconds: int, budget: int, result: Path, log: Path) -> None:
    line = {"step": name, "rc": rc, "seconds": seconds, "budget": budget, "timed_out": rc in (124, 137),
            "result": _result(result), "error": _error(log)}
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.device_steps", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("preflight").add_argument("folders", nargs="*", default=["."])
    i = sub.add_parser("inputs")
    for a in ("shape", "work", "device", "n"):
        i.add_argument(a)
    b = sub.add_parser("bundle")
    for a in ("checkpoint", "method", "folder", "device"):
        b.add_argument(a)
    r = sub.add_parser("record")
    for a in ("out", "name", "rc", "seconds", "budget", "result", "log"):
        r.add_argument(a)
    t = sub.add_parser("trim")
    t.add_argument("wheel", type=Path)
    t.add_argument("keep", nargs="+")
    a = p.parse_args(argv)
    if a.what == "preflight":
        print(json.dumps(preflight(a.folders)))
    elif a.what == "inputs":
        inputs(a.shape, Path(a.work), a.device, int(a.n))
    elif a.what == "bundle":
        bundle(a.checkpoint, a.method, a.folder, a.device)
    elif a.what == "trim":
        before, after = trim(a.wheel, a.keep)
        print(f"{a.wheel.name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (kept *.so with {', '.join(a.keep)})")
    else:
        record(Path(a.out), a.name, int(a.rc), int(a.seconds), int(a.budget), Path(a.result), Path(a.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
