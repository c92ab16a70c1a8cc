"""Peak RAM of scoring one batch of large images: `python -m bench.image_memory`.

Writes one large PNG (default 9400x9400, a noisy pattern) and a small one, then runs
`python -m runtime.score` in a fresh process on a batch of `--batch` pairs of each and prints both
peak RSS figures (ru_maxrss of the child) and their difference: what the large images cost.
The same file is named by every pair: each pair decodes it again, as distinct files would be.
Linux only (ru_maxrss in KiB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, side: int) -> None:
    """A side x side RGB PNG that compresses like a photo would not (noise tiles, fast level 1)."""
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    reps = -(-side // 256)
    rows = np.tile(tile, (1, reps, 1))[:, :side]
    img = np.concatenate([np.roll(rows, 7 * i, axis=1) for i in range(reps)])[:side]
    Image.fromarray(img).save(path, compress_level=1)


def peak_rss(image: Path, batch: int, folder: Path) -> int:
    """Peak RSS in bytes of a fresh `python -m runtime.score` over `batch` pairs of `image`."""
    pairs = folder / f"pairs-{image.stem}.jsonl"
    pairs.write_text("".join(json.dumps({"id": i, "image": str(image), "caption": "a shape"}) + "\n"
                             for i in range(batch)))
    out = folder / f"out-{image.stem}.jsonl"
    out.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, "-m", "runtime.score", "--input", str(pairs), "--output", str(out),
                              "--batch-size", str(batch), "--quiet", "--max-new-tokens", "8"])
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"error: the scorer failed on {image} (status {status})")
    errors = [r["error"] for r in map(json.loads, out.read_text().splitlines()) if r["error"]]
    if errors:
        raise SystemExit(f"error: the scorer refused the images: {errors[0]}")
    return usage.ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.image_memory", description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=9400, help="side of the large image in pixels")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        large, small = folder / "large.png", folder / "small.png"
        write_image(large, args.side)
        write_image(small, 48)
        base = peak_rss(small, args.batch, folder)
        big = peak_rss(large, args.batch, folder)
        png_bytes = large.stat().st_size
    mib = 1 << 20
    print(json.dumps({"side": args.side, "batch": args.batch, "png_bytes": png_bytes,
                      "peak_rss_small_mib": round(base / mib), "peak_rss_large_mib": round(big / mib),
                      "large_images_cost_mib": round((big - base) / mib)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
