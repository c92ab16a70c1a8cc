"""report.md (tables), results.json (every number) and PNG plots of one bench run."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.projection import projection_rows  # noqa: E402
from runtime.atomic import atomic_path, write_text  # noqa: E402

GIB, MIB = 2**30, 2**20


def med(xs) -> float:
    return statistics.median(xs) if xs else math.nan


def timing(xs, digits: int = 1) -> str:
    """Median with the spread of the repeats: `12.3 (12.0-12.9)`."""
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{med(xs):.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def num(x, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def sig(x) -> str:
    """3 significant digits: KL divergences span many orders of magnitude."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def fit_cells(v: dict, caps: tuple[int, ...], measured: bool) -> list[str]:
    """Per cap: the batch sizes that run under it (measured on CUDA, estimated from peak memory on CPU)."""
    cost = v.get("cost") or {}
    if not cost.get("batches"):
        return ["-"] * len(caps)
    if measured:
        fits = {int(c): b for c, b in cost.get("fit", {}).items()}
    else:
        fits = {c: [int(b) for b, e in cost["batches"].items() if e["peak_bytes"] <= c * GIB] for c in caps}
    best = cost["best_batch"]
    cells = []
    for cap in caps:
        ok = fits.get(cap, [])
        cells.append("no" if not ok else ("b1" + (f", best b{best}" if best in ok and best != 1 else "")
                                          if 1 in ok else f"b{max(ok)}"))
    return cells


def main_table(r: dict) -> list[str]:
    accuracy = r["mode"] != "synthetic"
    head = ["variant", "method", "bits/weight", "disk MiB"]
    head += ["overall agreement", "within 1", "KL mean", "top-1"] if accuracy else []
    head += ["ms/pair b1", "pairs/s (best batch)", "peak GiB b1"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in r["variants"]:
        a, t, c = v.get("accuracy") or {}, v.get("teacher_forced") or {}, v.get("cost") or {}
        one = (c.get("batches") or {}).get("1", {})
        cells = [v["name"], v["method"], num(v.get("bits_per_weight"), 2), num((v.get("disk_bytes") or math.nan) / MIB, 1)]
        if accuracy:
            cells += [pct(a.get("overall_agreement")), pct(a.get("overall_within_1")), sig(t.get("kl_mean")),
                      pct(t.get("top1_agreement"))]
        cells += [timing(one.get("ms_per_pair", [])),
                  f"{timing(c.get('pairs_per_s_best', []), 2)} (b{c.get('best_batch', '-')})",
                  num(one.get("peak_bytes", math.nan) / GIB, 2)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def accuracy_table(r: dict) -> list[str]:
    rows = ["| variant | agreement | within 1 | MAD | Spearman | Kendall | E[score] MAD | KL mean | KL p99 | top-1 | "
            "min layer SNR dB | sub-scores | recaption F1 | ROUGE-L | JSON valid | enhance decision |", "|" + "---|" * 16]
    for v in r["variants"]:
        a, t = v.get("accuracy"), v.get("teacher_forced") or {}
        if not a:
            continue
        snr = min(v["layer_snr_db"]) if v.get("layer_snr_db") else None
        rows.append(f"| {v['name']} | {pct(a['overall_agreement'])} | {pct(a['overall_within_1'])} | "
                    f"{num(a['overall_mad'])} | {num(a['spearman'])} | {num(a['kendall'])} | "
                    f"{num(t.get('expected_score_mad'))} | {sig(t.get('kl_mean'))} | {sig(t.get('kl_p99'))} | "
                    f"{pct(t.get('top1_agreement'))} | {num(snr, 1)} | {pct(a['sub_score_agreement_mean'])} | "
                    f"{num(a['recaption_f1'])} | {num(a['recaption_rouge_l'])} | {pct(a['json_valid'])} | "
                    f"{pct(a['enhance_agreement'])} |")
    return rows


def cost_table(r: dict) -> list[str]:
    gpu = r["device"].startswith("cuda")
    rows = ["| variant | compute | load s | encode ms b1 | prefill ms b1 | decode ms/step b1 | ms/pair b1 | "
            "pairs/s (best batch) | new tokens/pair | peak GiB b1 | peak GiB best | decode GB/s | prefill TFLOP/s |",
            "|" + "---|" * 13]
    ceil = r["ceilings"]
    for v in r["variants"]:
        c = v.get("cost")
        if not c or "batches" not in c:
            rows.append(f"| {v['name']} | failed: {v.get('cost_error', '?')} |" + " |" * 11)
            continue
        one, best = c["batches"]["1"], c["batches"][str(c["best_batch"])]
        rates = "- | - |"  # a GGUF export: llama.cpp holds its weights, no bytes read or FLOPs counted here
        if "decode_read_bytes" in c:
            gbs = c["decode_read_bytes"] / (med(c["decode_ms_per_step"]) / 1000) / 1e9
            tokens = c["image_tokens"] + c["prompt_tokens_first"]  # batch 1 runs the first pair
            tflops = c["linear_flops_per_token"] * tokens / (med(c["prefill_ms"]) / 1000) / 1e12
            rates = (f"{gbs:.3g} ({gbs / ceil['copy_gb_per_s']:.0%}) | "
                     f"{tflops:.3g} ({tflops / ceil['matmul_tflop_per_s']:.0%}) |")
        compute = f"{c['compute_dtype']} {'/'.join(c.get('linear_kernels', []))}" if "compute_dtype" in c else "llama.cpp"
        rows.append(f"| {v['name']} | {compute} | {c['load_s']:.1f} | {timing(c['encode_ms_b1'])} | "
                    f"{timing(c['prefill_ms'])} | {timing(c['decode_ms_per_step'], 2)} | {timing(one['ms_per_pair'])} | "
                    f"{timing(c['pairs_per_s_best'], 2)} (b{c['best_batch']}) | {one['new_tokens_mean']:.1f} | "
                    f"{one['peak_bytes'] / GIB:.2f} | {best['peak_bytes'] / GIB:.2f} | " + rates)
    rows.append("")
    rows.append(f"Ceilings measured in this run: copy {ceil['copy_gb_per_s']:.1f} GB/s (read + write), "
                f"{ceil['matmul_dtype']} matmul {ceil['matmul_tflop_per_s']:.3g} TFLOP/s (n={ceil['matmul_n']}). "
                "encode = vision tower + prompt embeddings; prefill = the prompt's forward pass up to the first new "
                "token; decode ms/step = the rest of decoding / (steps - 1). Decode GB/s = backbone bytes read per "
                "step (all weights but the input embedding table) / decode ms per step at batch 1; prefill TFLOP/s "
                "counts the decoder's linear layers only."
                + ("" if gpu else " On a CPU these say how far the run is from the machine, not from a GPU."))
    return rows


def engine_table(r: dict) -> list[str]:
    """The variants timed with more than one engine, each engine against the reference engine."""
    timed = [v for v in r["variants"] if len(v.get("costs") or {}) > 1]
    if not timed:
        return []
    rows = ["| variant | engine | decode ms/step b1 | ms/pair b1 | stream pairs/s (best batch) | new tokens/pair "
            "| GPU idle | pairs/s vs reference | ms/step vs reference |", "|" + "---|" * 9]
    for v in timed:
        ref = v["costs"].get("reference")
        for engine, c in v["costs"].items():
            st = c.get("stream") or {}
            idle = st.get("gpu_idle_share")
            ratio = (lambda a, b: f"{a / b:.2f}x" if ref and b else "-")
            rows.append(f"| {v['name']} | {engine}{' (compiled)' if c.get('compiled') else ''} | "
                        f"{timing(c['decode_ms_per_step'], 2)} | {timing(c['batches']['1']['ms_per_pair'])} | "
                        f"{num(st.get('pairs_per_s'), 2)} (b{c.get('stream_best_batch', '-')}) | "
                        f"{num(st.get('new_tokens_mean'), 1)} | {'-' if idle is None else pct(idle)} | "
                        f"{ratio(st.get('pairs_per_s', 0), (ref or {}).get('stream', {}).get('pairs_per_s'))} | "
                        f"{ratio(med(c['decode_ms_per_step']), ref and med(ref['decode_ms_per_step']))} |")
    lengths = next((c.get("lengths") for v in timed for c in v["costs"].values() if c.get("lengths")), None)
    rows += ["", f"Stream: `Scorer.score_stream` (batch mode's path) over {r['workload'].get('stream_pairs', '?')} "
             "pairs per batch size; the fast engine decodes them with continuous batching, the reference engine in "
             "static batches. " + (f"Token budgets drawn from {lengths} (random weights never stop by themselves)."
                                   if lengths else "Verdict lengths are the model's own.")
             + " GPU idle = 1 - the GPU's own utilization sampled every 50 ms (NVML), '-' where there is none."]
    return rows


def fit_table(r: dict, caps: tuple[int, ...]) -> list[str]:
    caps = tuple(sorted(caps))
    measured = r["device"].startswith("cuda")
    rows = ["| variant | " + " | ".join(f"{c} GiB" for c in caps) + " |", "|" + "---|" * (len(caps) + 1)]
    for v in r["variants"]:
        rows.append(f"| {v['name']} | " + " | ".join(fit_cells(v, caps, measured)) + " |")
    rows.append("")
    rows.append("Measured: each batch size was run again with the process's CUDA memory capped "
                "(torch.cuda.set_per_process_memory_fraction); the CUDA context (~0.5 GiB) and other processes "
                "come on top." if measured else
                "**Estimate** (this run had no GPU): a batch size fits a card when its peak memory measured here "
                "(weights + working memory, CPU compute types) is below the card's size; CUDA context and kernel "
                "workspaces are not included. Run on a GPU for the measured answer.")
    return rows


def write_markdown(r: dict, path: Path, caps: tuple[int, ...]) -> None:
    env = r["environment"]
    w = r.get("workload") or {"batch_sizes": "?", "repeats": "?"}
    first = next((v["cost"] for v in r["variants"] if v.get("cost")), None)
    lines = [f"# aitqe-edge benchmark ({r['started']})", ""]
    if r["mode"] == "synthetic":
        lines += [f"Synthetic `{r['synthetic']}` shapes with **random weights**: each variant a real bundle of random "
                  "weights, cost columns only. Accuracy columns are absent because random weights have no judgement "
                  "to keep; run with `--reference` and `--candidates` on real checkpoints for accuracy. Pairs: "
                  f"{r['pairs']['source']}.", ""]
    else:
        lines += [f"Reference: `{r['reference']}`. Pairs: {r['pairs']['source']} ({r['pairs']['count']} pairs).", ""]
    lines += [f"Machine: {env['machine']}. Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".",
              "Cost columns: `Scorer.score_batch`, the path `python -m runtime.score` runs, on the first B of these "
              "pairs read from their files"
              + (f" (1 image = {first['image_tokens']} tokens, {first['prompt_tokens_mean']:.0f} prompt tokens on "
                 f"average), {'whole verdicts' if first['output_all'] else 'stopping at <Overall>'}, at most "
                 f"{first['max_new_tokens']} new tokens" if first else "")
              + f"; batch sizes B {w['batch_sizes']}; {w['repeats']} timed repeats after a warm-up, shown as median "
              "(min-max): the spread within this run; separate runs on a shared machine can differ more, so compare "
              "variants within one run.", "",
              "## Summary", "", *main_table(r), ""]
    if r["mode"] != "synthetic":
        tokens = next((v["teacher_forced"]["tokens"] for v in r["variants"] if v.get("teacher_forced")), "?")
        lines += ["## Accuracy against the reference", "", *accuracy_table(r), "",
                  f"Enhancement decision: replace the caption when the overall score is below "
                  f"{r['enhance_threshold']}. KL, top-1 and the expected score are teacher-forced on the "
                  f"reference's full answers ({tokens} tokens).", ""]
    if engine_table(r):
        lines += ["## Engines: fast against reference", "", *engine_table(r), ""]
    if "ceilings" in r:
        lines += ["## Cost", "", *cost_table(r), "", "## Consumer-GPU fit (batch sizes that run)", "",
                  *fit_table(r, caps), ""]
    if projection_rows(r):
        lines += ["## Consumer GPUs: a projection from this run (not measured)", "", *projection_rows(r), ""]
    errors = [v for v in r["variants"] if v.get("cost_error") or v.get("accuracy_error")]
    if errors:
        lines += ["## Errors", ""] + [f"- {v['name']}: {v.get('cost_error') or v.get('accuracy_error')}" for v in errors]
    write_text(path, "\n".join(lines) + "\n")


def write_plots(r: dict, out: Path) -> list[str]:
    done = [v for v in r["variants"] if (v.get("cost") or {}).get("batches")]
    names = [v["name"] for v in done]
    ms = [med(v["cost"]["batches"]["1"]["ms_per_pair"]) for v in done]
    peak = [v["cost"]["batches"]["1"]["peak_bytes"] / GIB for v in done]
    written = []

    def scatter(x, y, xlabel, ylabel, title, name):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.scatter(x, y)
        for xi, yi, n in zip(x, y, names):
            ax.annotate(n, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        written.append(name)

    if r["mode"] != "synthetic":
        agree = [(v.get("accuracy") or {}).get("overall_agreement", math.nan) * 100 for v in done]
        scatter(ms, agree, "ms per pair, batch 1", "overall-score agreement with the reference (%)",
                "accuracy vs latency", "accuracy_latency.png")
        scatter(peak, agree, "peak memory at batch 1 (GiB)", "overall-score agreement with the reference (%)",
                "accuracy vs memory", "accuracy_memory.png")
    else:
        scatter(peak, ms, "peak memory at batch 1 (GiB)", "ms per pair, batch 1", "latency vs memory",
                "latency_memory.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, [med(v["cost"]["pairs_per_s_best"]) for v in done])
    ax.set(ylabel="pairs/s at the best batch size", title="throughput")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    with atomic_path(out / "throughput.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return written + ["throughput.png"]


def write(r: dict, out: Path, caps: tuple[int, ...], plots: bool = True) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    files = ["report.md", "results.json"]
    if plots:
        r["plots"] = write_plots(r, out)
        files += r["plots"]
    write_text(out / "results.json", json.dumps(r, indent=2, default=str))
    write_markdown(r, out / "report.md", caps)
    return files


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.report DIR`: rewrite DIR/report.md and the plots from DIR/results.json."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m bench.report", description="Rewrite a benchmark's report.md "
                                "and plots from its results.json.")
    p.add_argument("dir", metavar="DIR", help="the --output folder of a python -m bench run")
    out = Path(p.parse_args(argv).dir)
    if not (out / "results.json").is_file():
        print(f"error: {out}: no results.json; pass the --output folder of a python -m bench run", file=sys.stderr)
        return 1
    from bench.cost import CAPS_GIB

    r = json.loads((out / "results.json").read_text())
    r.setdefault("variants", [])
    print(", ".join(write(r, out, CAPS_GIB, plots=any(v.get("cost") for v in r["variants"]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
