"""Peak RAM of loading a checkpoint, against its weight bytes: `python -m bench.load_memory`.

Writes a random AITQE-layout checkpoint of the chosen size (or takes `--model`), then loads it in
a fresh process and reports (peak RSS - RSS before loading) / bytes of the loaded weights.
Every weight is touched after loading, so memory-mapped weights are counted once resident.
A ratio near 1 means the weights were streamed in; near 2 or more means a second copy was held.
Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from runtime.model.hub import resolve_model

SIZES = {  # FixtureSpec overrides
    "tiny": {},
    "small": {"hidden": 768, "layers": 8, "heads": 12, "kv_heads": 4, "intermediate": 3072,
              "tokenizer_vocab": 1000, "vocab_pad": 8192},
    "mid": {"hidden": 1024, "layers": 12, "heads": 16, "kv_heads": 4, "intermediate": 4096,
            "tokenizer_vocab": 1000, "vocab_pad": 8192, "vision_hidden": 384, "vision_layers": 6,
            "vision_heads": 6, "vision_intermediate": 1536, "image_size": 224, "patch_size": 14},
}

CHILD = """
import json, sys, torch
from runtime.model.checkpoint import DTYPES, load_checkpoint

def status(key):  # VmRSS / VmHWM of this process; unlike ru_maxrss, VmHWM is not inherited
    line = next(l for l in open("/proc/self/status") if l.startswith(key))
    return int(line.split()[1]) * 1024

before = status("VmRSS")
ck = load_checkpoint(sys.argv[1], dtype=DTYPES[sys.argv[2]])
tensors = [*ck.llm.parameters(), *ck.vision.parameters()]
with torch.inference_mode():  # touch every weight: mmap-backed tensors count once resident
    for t in tensors:
        t.float().sum()
weights = sum(t.numel() * t.element_size() for t in tensors)
print(json.dumps({"rss_before": before, "peak_rss": status("VmHWM"), "weight_bytes": weights}))
"""


def measure(model: Path, dtype: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(model), dtype], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    r["ratio"] = (r["peak_rss"] - r["rss_before"]) / r["weight_bytes"]
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load_memory", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint folder, or a Hub model ORG/NAME[@REVISION] "
                                   "(default: write a random one of --size)")
    p.add_argument("--size", choices=SIZES, default="mid")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--shard-mb", type=int, default=0, help="shard size of the written checkpoint (0: one file)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = resolve_model(args.model) if args.model else None
        if model is None:
            from bench.synthetic.checkpoints import FixtureSpec, random_checkpoint

            model = random_checkpoint(Path(tmp) / "ck", FixtureSpec(**SIZES[args.size]),
                                      shard_bytes=args.shard_mb * 2**20 or None)
        files = sum(f.stat().st_size for f in model.iterdir() if f.suffix in (".safetensors", ".bin"))
        r = measure(model, args.dtype)
    mib = 2**20
    print(f"weights {r['weight_bytes'] / mib:.0f} MiB ({args.dtype}), files {files / mib:.0f} MiB, "
          f"RSS before load {r['rss_before'] / mib:.0f} MiB, peak {r['peak_rss'] / mib:.0f} MiB, "
          f"peak increase / weight bytes = {r['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
