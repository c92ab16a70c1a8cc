"""Cost of one variant, in a process of its own: `python -m bench.cost (--model PATH | --synthetic SHAPE
--method M) [--device cpu|cuda]`; prints one JSON object.

A fresh process per variant keeps its load time, peak memory and memory-capped runs free of the
other variants. The workload is llama-bench's: one image and --text-tokens prompt tokens, then exactly
--new-tokens greedy tokens with the KV cache, from random embeddings of the right shapes (no
tokenizer: every variant does the same work). Measured, each --repeats times after a warm-up: vision
ms per image, prefill ms (the first token) and decode ms per token at batch 1, and ms per pair
(vision + prefill + decode, over the batch) for each batch size until memory runs out. Peak memory
is the CUDA allocator's peak, or on CPU the peak RSS above the RSS before loading. On CUDA, every
batch size that ran is run once more under process memory caps of 8, 12, 16 and 24 GiB.
The timing loop is written here because llama-bench and vLLM's benchmarks time their own engines;
this times the runtime's own modules (the transformers backbone and the vision encoder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from transformers import GenerationConfig

from bench.ceilings import sync
from runtime.errors import InputError

CAPS_GIB = (24, 16, 12, 8)


def proc_status(key: str) -> int:
    line = next(line for line in open("/proc/self/status") if line.startswith(key))
    return int(line.split()[1]) * 1024


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
            f.write("5")


def peak(device: str, base: int) -> int:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else proc_status("VmHWM") - base


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


@torch.inference_mode()
def run_once(llm, vision, image_size: int, text_tokens: int, new_tokens: int, batch: int, device: str) -> dict:
    """Seconds of the vision tower, of the first token (prefill) and of all new tokens, for one batch."""
    embed = llm.get_input_embeddings().weight
    pixels = torch.randn(batch, 3, image_size, image_size, device=device)
    text = torch.randn(batch, text_tokens, embed.shape[1], device=device, dtype=embed.dtype) * 0.02
    out = {}
    sync(device)
    start = time.perf_counter()
    image = vision(pixels)
    sync(device)
    out["vision_s"] = time.perf_counter() - start
    embeds = torch.cat([image.to(embed.dtype), text], dim=1)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
    for key, n in (("prefill_s", 1), ("generate_s", new_tokens)):
        cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=n, min_new_tokens=n, eos_token_id=None,
                               pad_token_id=0, use_cache=True)
        start = time.perf_counter()
        llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=cfg)
        sync(device)
        out[key] = time.perf_counter() - start
    out["image_tokens"] = image.shape[1]
    return out


def weight_bytes(llm) -> tuple[int, int]:
    """Bytes of the backbone's parameters and buffers, and of those read per decode step (all but the
    input embedding table, of which a step reads one row)."""
    tensors = {t.data_ptr(): t for t in [*llm.parameters(), *llm.buffers()]}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    emb = llm.get_input_embeddings().weight
    return total, total - emb.numel() * emb.element_size()


def linear_flops_per_token(cfg) -> int:
    """2 x the decoder's linear-layer weights (attention projections + MLP), from the config."""
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    per_layer = cfg.hidden_size * (2 * q + 2 * kv) + 3 * cfg.hidden_size * cfg.intermediate_size
    return 2 * per_layer * cfg.num_hidden_layers


def measure(llm, vision, image_size: int, text_tokens: int, new_tokens: int, *, device: str,
            batch_sizes: list[int], repeats: int, base_rss: int, log=print) -> dict:
    r = {"text_tokens": text_tokens, "new_tokens": new_tokens, "batches": {}, "oom_batch": None}
    for b in batch_sizes:
        reset_peak(device)
        try:
            run_once(llm, vision, image_size, text_tokens, new_tokens, b, device)  # warm-up
            runs = [run_once(llm, vision, image_size, text_tokens, new_tokens, b, device) for _ in range(repeats)]
        except (RuntimeError, torch.OutOfMemoryError) as e:
            if not is_oom(e):
                raise
            r["oom_batch"] = b
            log(f"  batch {b}: out of memory, larger batches skipped")
            break
        finally:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        r["image_tokens"] = runs[0]["image_tokens"]
        entry = {key: [x[key] for x in runs] for key in ("vision_s", "prefill_s", "generate_s")}
        entry["ms_per_pair"] = [1000 * (x["vision_s"] + x["generate_s"]) / b for x in runs]
        entry["peak_bytes"] = peak(device, base_rss)
        r["batches"][str(b)] = entry
        log(f"  batch {b}: {statistics.median(entry['ms_per_pair']):.1f} ms/pair, "
            f"peak {entry['peak_bytes'] / 2**30:.2f} GiB")
    if not r["batches"]:
        raise InputError(f"batch {batch_sizes[0]} does not fit in memory")
    one = r["batches"][str(batch_sizes[0])]
    r["vision_ms_per_image_b1"] = [1000 * s for s in one["vision_s"]]
    r["prefill_ms"] = [1000 * s for s in one["prefill_s"]]
    r["decode_ms_per_token"] = [1000 * (g - p) / max(1, new_tokens - 1) for g, p in
                                zip(one["generate_s"], one["prefill_s"])]
    best = min(r["batches"], key=lambda k: statistics.median(r["batches"][k]["ms_per_pair"]))
    r["best_batch"] = int(best)
    r["vision_ms_per_image_best"] = [1000 * s / int(best) for s in r["batches"][best]["vision_s"]]
    r["pairs_per_s_best"] = [1000 / ms for ms in r["batches"][best]["ms_per_pair"]]
    return r


def capped_fit(llm, vision, image_size: int, text_tokens: int, new_tokens: int, batches: list[int]) -> dict:
    """For each cap: the batch sizes that ran once without running out of memory under it."""
    total = torch.cuda.get_device_properties(0).total_memory
    fit = {}
    for cap in CAPS_GIB:
        fit[str(cap)] = []
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / total))
        for b in batches:
            torch.cuda.empty_cache()
            try:
                run_once(llm, vision, image_size, text_tokens, new_tokens, b, "cuda")
                fit[str(cap)].append(b)
            except (RuntimeError, torch.OutOfMemoryError) as e:
                if not is_oom(e):
                    raise
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()
    return fit


def load(args) -> tuple[dict, object, object, int, int, int]:
    """Variant description, backbone, vision encoder, image size, text and new tokens."""
    if args.synthetic:
        from bench.synthetic import build

        m = build(args.synthetic, args.method, args.device)
        return ({"kind": "synthetic", "shape": args.synthetic, "method": args.method, "params": m.params},
                m.llm, m.vision, m.image_size, m.text_tokens, m.new_tokens)
    from runtime.scorer import Scorer

    s = Scorer.from_pretrained(args.model, device=args.device)
    return {"kind": "model", "path": args.model}, s.llm, s.vision, s.image_spec.size, args.text_tokens, args.new_tokens


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint or bundle folder")
    src.add_argument("--synthetic", help="random weights of a shape in bench.synthetic.SHAPES")
    p.add_argument("--method", default="bf16", help="with --synthetic: bf16, fp16, bnb-int8, bnb-nf4, gptq-int4")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--text-tokens", type=int, default=42)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch-sizes", default="1,4,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-fit", action="store_true", help="skip the memory-capped runs (CUDA)")
    args = p.parse_args(argv)
    batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        base = proc_status("VmRSS")
        reset_peak(args.device)
        start = time.perf_counter()
        variant, llm, vision, size, text_tokens, new_tokens = load(args)
        sync(args.device)
        r = {"variant": variant, "device": args.device, "load_s": time.perf_counter() - start,
             "load_peak_bytes": peak(args.device, base),
             "compute_dtype": str(llm.get_input_embeddings().weight.dtype).removeprefix("torch.")}
        r["weight_bytes"], r["decode_read_bytes"] = weight_bytes(llm)
        r["linear_flops_per_token"] = linear_flops_per_token(llm.config)
        r |= measure(llm, vision, size, text_tokens, new_tokens, device=args.device, batch_sizes=batch_sizes,
                     repeats=args.repeats, base_rss=base, log=log)
        if args.device.startswith("cuda") and not args.no_fit:
            r["fit"] = capped_fit(llm, vision, size, text_tokens, new_tokens, [int(b) for b in r["batches"]])
    except (InputError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
