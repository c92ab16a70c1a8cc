"""Cost of one variant, in a process of its own: `python -m bench.cost --model PATH --pairs PAIRS.jsonl
[--device cpu|cuda] [--partial FILE]`; prints one JSON object. With --partial, what is measured so far is
also written to FILE (atomically) after loading and after each batch size, so a run cut short keeps it.

It times exactly what `python -m runtime.score` runs, with the engine it is given (--engine):
`Scorer.score_stream` (batch mode: continuous batching with the fast engine) for pairs/s on a
stream of pairs, and `Scorer.score_batch` (one batch) for the stage timings, on pairs read from a
pairs file (image files, captions), in the default stop-at-Overall mode unless --output-all, with
the stage timings the scorer itself records (prepare, encode, prefill, decode). A fresh process per
variant keeps its load time, peak memory and memory-capped runs free of the other variants. For
each batch size (its first B pairs, repeated if the file has fewer), after a warm-up, --repeats
timed runs: wall ms per pair and per stage, new tokens, decode steps; the texts of the first run
are kept, so a test can hold them to `runtime.score`'s. Peak memory is the CUDA allocator's peak,
or on CPU the peak RSS above the RSS before loading. On CUDA, every batch size that ran is run once
more under process memory caps of 8, 12, 16 and 24 GiB. This loop is written here because it times
this runtime's own stages; llama-bench and vLLM's benchmarks time their own engines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import threading
import time
from itertools import cycle, islice
from pathlib import Path

import torch

from bench.ceilings import sync
from bench.weights import backbone_shape, linear_flops_per_token, linear_kernels, weight_bytes
from runtime.atomic import write_text
from runtime.errors import InputError
from runtime.model.hub import resolve_model
from runtime.data.jsonl import read_jsonl
from runtime.scorer import DEFAULT_MAX_NEW_TOKENS, ENGINES, Pair, Scorer

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


def run_once(scorer: Scorer, pairs: list[Pair], output_all: bool, max_new_tokens: int) -> dict:
    """One `score_batch` of `pairs`: wall seconds, the scorer's stage timings, tokens and texts."""
    sync(scorer.device)
    start = time.perf_counter()
    verdicts = scorer.score_batch(pairs, output_all=output_all, max_new_tokens=max_new_tokens)
    sync(scorer.device)
    wall = time.perf_counter() - start
    bad = [v.error for v in verdicts if v.error]
    if bad:
        raise InputError(f"a benchmark pair failed: {bad[0]}")
    t = verdicts[0].timings
    return {"wall_s": wall, **{k: t[k] for k in ("prepare_ms", "encode_ms", "prefill_ms", "decode_ms", "decode_steps")},
            "new_tokens": [v.timings["new_tokens"] for v in verdicts], "texts": [v.raw_text for v in verdicts]}


def set_batch(scorer: Scorer, b: int) -> None:
    """Decode b rows together, as `runtime.score --batch-size b` does."""
    scorer.decoder.set_slots(b)


class Busy:
    """The GPU's own utilization (NVML, through torch), sampled every 50 ms while in use; None without it."""

    def __init__(self, device: str):
        self.samples: list[float] = []
        self.on = device.startswith("cuda")
        if self.on:
            try:
                torch.cuda.utilization()
            except Exception:  # no NVML (pynvml) on this machine
                self.on = False

    def __enter__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        if self.on:
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.05):
            self.samples.append(torch.cuda.utilization())

    def __exit__(self, *exc):
        self.stop.set()
        if self.on:
            self.thread.join()

    @property
    def idle_share(self) -> float | None:
        return 1 - statistics.mean(self.samples) / 100 if self.samples else None


def stream_once(scorer: Scorer, pairs: list[Pair], b: int, output_all: bool, max_new_tokens: int) -> dict:
    """`score_stream` of all `pairs` with b rows decoded together (what batch mode runs): pairs/s."""
    sync(scorer.device)
    start = time.perf_counter()
    with Busy(scorer.device) as busy:
        verdicts = list(scorer.score_stream(pairs, batch_size=b, output_all=output_all, max_new_tokens=max_new_tokens))
        sync(scorer.device)
    wall = time.perf_counter() - start
    bad = [v.error for v in verdicts if v.error]
    if bad:
        raise InputError(f"a benchmark pair failed: {bad[0]}")
    return {"pairs_per_s": len(pairs) / wall, "gpu_idle_share": busy.idle_share,
            "new_tokens_mean": statistics.mean(v.timings["new_tokens"] for v in verdicts)}


def with_lengths(pairs: list[Pair], lengths: str | None, seed: int = 0) -> list[Pair]:
    """Pairs with token budgets drawn from `uniform:LO:HI` (for random weights, which never stop by
    themselves): the length mix of real verdicts, stop-at-Overall ones being ~15-100 tokens."""
    if not lengths:
        return pairs
    try:
        kind, lo, hi = lengths.split(":")
        lo, hi = int(lo), int(hi)
        assert kind == "uniform" and 1 <= lo <= hi
    except (ValueError, AssertionError):
        raise InputError(f"--lengths {lengths!r}: expected uniform:LO:HI with 1 <= LO <= HI") from None
    rng = random.Random(seed)
    return [dataclasses.replace(p, max_new_tokens=rng.randint(lo, hi)) for p in pairs]


def measure(scorer: Scorer, pairs: list[Pair], *, batch_sizes: list[int], repeats: int, output_all: bool,
            max_new_tokens: int, base_rss: int, stream_pairs: list[Pair] | None = None, log=print,
            done=lambda r: None) -> dict:
    """done(r): called with what is measured so far after each batch size."""
    r = {"batches": {}, "oom_batch": None}
    for b in batch_sizes:
        set_batch(scorer, b)
        batch = list(islice(cycle(pairs), b))
        reset_peak(scorer.device)
        try:
            run_once(scorer, batch, output_all, max_new_tokens)  # warm-up
            runs = [run_once(scorer, batch, output_all, max_new_tokens) for _ in range(repeats)]
        except (RuntimeError, torch.OutOfMemoryError) as e:
            if not is_oom(e):
                raise
            r["oom_batch"] = b
            log(f"  batch {b}: out of memory, larger batches skipped")
            break
        finally:
            if scorer.device.startswith("cuda"):
                torch.cuda.empty_cache()
        entry = {key: [x[key] for x in runs] for key in ("prepare_ms", "encode_ms", "prefill_ms", "decode_ms",
                                                          "decode_steps")}
        entry["ms_per_pair"] = [1000 * x["wall_s"] / b for x in runs]
        entry["new_tokens_mean"] = statistics.mean(runs[0]["new_tokens"])
        entry["texts"] = runs[0]["texts"]
        if stream_pairs:
            entry["stream"] = stream_once(scorer, stream_pairs, b, output_all, max_new_tokens)
        entry["peak_bytes"] = peak(scorer.device, base_rss)
        r["batches"][str(b)] = entry
        r["compiles"] = scorer.decoder.compiles
        done(r)
        log(f"  batch {b}: {statistics.median(entry['ms_per_pair']):.1f} ms/pair, "
            f"peak {entry['peak_bytes'] / 2**30:.2f} GiB"
            + (f", stream {entry['stream']['pairs_per_s']:.2f} pairs/s" if stream_pairs else ""))
    if not r["batches"]:
        raise InputError(f"batch {batch_sizes[0]} does not fit in memory")
    one = r["batches"][str(batch_sizes[0])]
    r["encode_ms_b1"] = one["encode_ms"]
    r["prefill_ms"] = one["prefill_ms"]
    r["decode_ms_per_step"] = [(d - p) / max(1, s - 1) for d, p, s in
                               zip(one["decode_ms"], one["prefill_ms"], one["decode_steps"])]
    best = min(r["batches"], key=lambda k: statistics.median(r["batches"][k]["ms_per_pair"]))
    r["best_batch"] = int(best)
    r["pairs_per_s_best"] = [1000 / ms for ms in r["batches"][best]["ms_per_pair"]]
    if stream_pairs:
        top = max(r["batches"], key=lambda k: r["batches"][k]["stream"]["pairs_per_s"])
        r["stream_best_batch"], r["stream"] = int(top), r["batches"][top]["stream"]
        r["stream_pairs"] = len(stream_pairs)
    return r


def capped_fit(scorer: Scorer, pairs: list[Pair], batches: list[int], output_all: bool, max_new_tokens: int) -> dict:
    """For each cap: the batch sizes that ran once without running out of memory under it."""
    total = torch.cuda.get_device_properties(0).total_memory
    fit = {}
    for cap in CAPS_GIB:
        fit[str(cap)] = []
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / total))
        for b in batches:
            set_batch(scorer, b)
            torch.cuda.empty_cache()
            try:
                run_once(scorer, list(islice(cycle(pairs), b)), output_all, max_new_tokens)
                fit[str(cap)].append(b)
            except (RuntimeError, torch.OutOfMemoryError) as e:
                if not is_oom(e):
                    raise
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()
    return fit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint or bundle folder, or a Hub model ORG/NAME[@REVISION]")
    p.add_argument("--pairs", required=True, help="pairs JSONL (id, image, caption), as for runtime.score")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", default="1,4,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--output-all", action="store_true", help="generate whole verdicts, not up to the overall score")
    p.add_argument("--no-fit", action="store_true", help="skip the memory-capped runs (CUDA)")
    p.add_argument("--engine", choices=ENGINES, default="fast", help="the decode engine, as runtime.score --engine")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="as runtime.score --compile")
    p.add_argument("--stream-pairs", type=int, default=0,
                   help="also time score_stream (batch mode's path) on this many pairs per batch size: pairs/s")
    p.add_argument("--lengths", help="uniform:LO:HI token budgets for the streamed pairs (random weights)")
    p.add_argument("--partial", help="write what is measured so far to this JSON file as it goes")
    args = p.parse_args(argv)
    batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",")})

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        pairs = [Pair(r.image, r.caption, r.id) for r in read_jsonl(args.pairs) if r.error is None]
        if not pairs:
            raise InputError(f"--pairs {args.pairs}: no usable pairs")
        base = proc_status("VmRSS")
        reset_peak(args.device)
        start = time.perf_counter()
        scorer = Scorer.from_pretrained(resolve_model(args.model), device=args.device, engine=args.engine,
                                        compile={"auto": None, "on": True, "off": False}[args.compile])
        sync(args.device)
        llm = scorer.llm
        stream = with_lengths(list(islice(cycle(pairs), args.stream_pairs)), args.lengths)
        r = {"model": args.model, "device": args.device, "engine": scorer.engine,
             "compiled": scorer.decoder.compiled, "lengths": args.lengths,
             "load_s": time.perf_counter() - start,
             "load_peak_bytes": peak(args.device, base), "output_all": args.output_all,
             "max_new_tokens": args.max_new_tokens, "image_tokens": scorer.image_tokens}
        if llm is not None:  # None: a GGUF export, whose weights llama.cpp holds (its size is the bench's disk bytes)
            r["compute_dtype"] = str(llm.get_input_embeddings().weight.dtype).removeprefix("torch.")
            r["weight_bytes"], r["decode_read_bytes"] = weight_bytes(llm)
            r["linear_flops_per_token"] = linear_flops_per_token(llm.config)
            r["linear_kernels"] = linear_kernels(llm)
            r["backbone_shape"] = backbone_shape(llm.config)
        prompts = [len(scorer.prepare(q, args.max_new_tokens).ids) for q in pairs[:max(batch_sizes)]]
        r["prompt_tokens_mean"], r["prompt_tokens_first"] = statistics.mean(prompts), prompts[0]

        def partial(measured: dict) -> None:
            if args.partial:
                write_text(Path(args.partial), json.dumps(r | measured | {"partial": True}))
        partial({})
        r |= measure(scorer, pairs, batch_sizes=batch_sizes, repeats=args.repeats, output_all=args.output_all,
                     max_new_tokens=args.max_new_tokens, base_rss=base, stream_pairs=stream, log=log, done=partial)
        if args.device.startswith("cuda") and not args.no_fit:
            r["fit"] = capped_fit(scorer, pairs, [int(b) for b in r["batches"]], args.output_all, args.max_new_tokens)
    except (InputError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.partial:
        write_text(Path(args.partial), json.dumps(r))
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
