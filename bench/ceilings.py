"""The machine's own ceilings, measured in the same run as the variants they bound.

Memory bandwidth: one large tensor copy (bytes read + bytes written per second). Matmul: square
matrix products in the dtype the 16-bit model computes in there (bf16 on CUDA, fp32 on CPU).
"""

from __future__ import annotations

import time

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> list[float]:
    """ms of each of `repeats` calls of fn, after one warm-up, the device synchronized around each."""
    fn()
    sync(device)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        out.append(1000 * (time.perf_counter() - start))
    return out


def best_seconds(fn, device: str, repeats: int) -> float:
    return min(timed(fn, device, repeats)) / 1000


def measure(device: str, repeats: int = 5) -> dict:
    gpu = device.startswith("cuda")
    n_bytes = (1 << 30) if gpu else (256 << 20)
    buffers = [torch.empty(n_bytes, dtype=torch.uint8, device=device) for _ in range(2)]
    copy_s = best_seconds(lambda: buffers[1].copy_(buffers[0]), device, repeats)
    buffers.clear()
    n, dtype = (8192, torch.bfloat16) if gpu else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    mm_s = best_seconds(lambda: a @ b, device, repeats)
    return {"copy_gb_per_s": 2 * n_bytes / copy_s / 1e9, "copy_bytes": n_bytes,
            "matmul_tflop_per_s": 2 * n**3 / mm_s / 1e12, "matmul_n": n,
            "matmul_dtype": str(dtype).removeprefix("torch."), "repeats": repeats}
