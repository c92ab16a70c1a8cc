"""The one summary of a `bench/device_check.sh` run: `python -m bench.device_summary OUT`.

Reads OUT/bench-SHAPE/results.json (random-weight bundles of every method beside bf16), OUT/tower.json
(the vision tower alone) and OUT/env.json; writes OUT/summary.json and prints the summary table, the
GPU checks of the quantization issue (each `pass`, `FAIL` or `not measured`, with the figures) and
the consumer-GPU projection when the card is one bench.projection knows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.projection import projection_rows
from bench.report import med
from runtime.atomic import write_text

GIB = 2**30


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def method_rows(r: dict) -> dict[str, dict]:
    """method -> the figures the summary shows, for each variant with a cost; bf16's reference engine too."""
    out = {}
    for v in r.get("variants", []):
        for engine, c in (v.get("costs") or {}).items():
            if not c.get("batches") or (engine != r["workload"]["engines"][0] and v["method"] != "bf16"):
                continue
            key = v["method"] if engine == r["workload"]["engines"][0] else f"{v['method']} ({engine} engine)"
            one = c["batches"]["1"]
            out[key] = {"engine": engine + (" compiled" if c.get("compiled") else ""),
                        "kernels": c.get("linear_kernels", []), "bits_per_weight": v.get("bits_per_weight"),
                        "load_s": c["load_s"], "prefill_ms": med(c["prefill_ms"]),
                        "decode_ms_per_step": med(c["decode_ms_per_step"]), "ms_per_pair": med(one["ms_per_pair"]),
                        "stream_pairs_per_s": (c.get("stream") or {}).get("pairs_per_s"),
                        "stream_batch": c.get("stream_best_batch"), "peak_gib_b1": one["peak_bytes"] / GIB}
    for v in r.get("variants", []):
        if v.get("cost_error") and v["method"] not in out:
            out[v["method"]] = {"error": v["cost_error"].removeprefix("error: ")}
    return out


def checks(rows: dict[str, dict]) -> list[dict]:
    """The issue's GPU checks against bf16 (its default engine, and the reference engine, eager)."""
    def get(m, k):
        return (rows.get(m) or {}).get(k)

    out = []
    for base in ("bf16", "bf16 (reference engine)"):
        d, b = get("gptq-int4", "decode_ms_per_step"), get(base, "decode_ms_per_step")
        out.append({"check": f"gptq-int4 decode ms/step b1 <= 0.5x {base}", "value": d and b and d / b, "limit": 0.5})
        p, bp = get("gptq-int4", "prefill_ms"), get(base, "prefill_ms")
        out.append({"check": f"gptq-int4 prefill b1 <= 1.3x {base}", "value": p and bp and p / bp, "limit": 1.3})
    f, b = get("fp8", "prefill_ms"), get("bf16", "prefill_ms")
    out.append({"check": "fp8 prefill b1 < 1.0x bf16", "value": f and b and f / b, "limit": 1.0, "strict": True})
    for m in ("gptq-int4", "bnb-nf4"):
        out.append({"check": f"{m} pipeline peak GiB b1 <= 7", "value": get(m, "peak_gib_b1"), "limit": 7.0})
    for c in out:
        v = c["value"]
        c["result"] = ("not measured" if v is None else
                       "pass" if (v < c["limit"] if c.get("strict") else v <= c["limit"]) else "FAIL")
    return out


def fmt(x, digits=1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(rows: dict[str, dict]) -> list[str]:
    lines = ["| method | engine | linear kernels | bits/w | load s | prefill ms b1 | decode ms/step b1 | ms/pair b1 "
             "| stream pairs/s (batch) | peak GiB b1 |", "|" + "---|" * 10]
    for m, x in rows.items():
        if "error" in x:
            lines.append(f"| {m} | failed: {x['error'][:200]} |" + " |" * 8)
            continue
        lines.append(f"| {m} | {x['engine']} | {'/'.join(x['kernels'])} | {fmt(x['bits_per_weight'], 2)} | "
                     f"{fmt(x['load_s'])} | {fmt(x['prefill_ms'])} | {fmt(x['decode_ms_per_step'], 2)} | "
                     f"{fmt(x['ms_per_pair'])} | {fmt(x['stream_pairs_per_s'], 2)} (b{x['stream_batch']}) | "
                     f"{fmt(x['peak_gib_b1'], 2)} |")
    return lines


def tower_lines(t: dict | None) -> list[str]:
    if not t:
        return ["vision tower: not measured"]
    lines = [f"| vision tower ({t['shape']}, {t['dtype']}, {t['image_tokens']} tokens) | "
             + " | ".join(f"b{b} ms/image" for b in next(iter(t["attention"].values()), {})) + " |", "|---|---|---|"]
    for attn, by_b in t["attention"].items():
        lines.append(f"| PyTorch {attn} | " + " | ".join(x.get("error") or fmt(med(x["ms_per_image"]), 2)
                                                        for x in by_b.values()) + " |")
    lines.append(f"| onnxruntime CUDA | {t['onnx_cuda'] or 'measured separately'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.device_summary", description=__doc__.splitlines()[0])
    p.add_argument("out", metavar="OUT", help="the result folder of a bench/device_check.sh run")
    out = Path(p.parse_args(argv).out)
    if not out.is_dir():
        print(f"error: {out}: no such folder; pass the OUT folder of a bench/device_check.sh run", file=sys.stderr)
        return 1
    env = load(out / "env.json") or {}
    r = next((x for x in map(load, sorted(out.glob("bench-*/results.json"))) if x and x.get("mode") == "synthetic"), None)
    rows = method_rows(r) if r else {}
    tower = load(out / "tower.json")
    summary = {"environment": env, "methods": rows, "checks": checks(rows), "tower": tower,
               "projection": projection_rows(r) if r else []}
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    print(f"\n## GPU check summary: {env.get('device_name', '?')} (capability {env.get('capability', '?')}), "
          f"{r and r.get('synthetic')} shapes, random weights")
    print("\n".join(table(rows) + [""] + tower_lines(tower) + ["", "| check | value | result |", "|---|---|---|"]
                    + [f"| {c['check']} | {fmt(c['value'], 2)} | {c['result']} |" for c in summary["checks"]]))
    if summary["projection"]:
        print("\n" + "\n".join(summary["projection"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
