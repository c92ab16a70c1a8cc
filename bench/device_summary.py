"""The one summary of a `bench/device_check.sh` run: `python -m bench.device_summary OUT`.

Reads OUT/results.jsonl (one line per step: bench.cost's figures for each method, the attention probe,
the vision tower) and OUT/preflight.json; writes OUT/summary.json and prints the summary table, the
attention probe, the GPU checks of issue 24 (each `pass`, `FAIL` or `not measured`, with the figures)
and the consumer-GPU projection when the card is one bench.projection knows. Steps that ran out of time
show what they measured before; steps that failed show their error line.
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
NAMES = {"fp8-eager": "fp8 (eager)", "reference": "bf16 (reference engine)"}  # step -> method row


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steps(out: Path) -> list[dict]:
    try:
        lines = (out / "results.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [json.loads(x) for x in lines if x.strip()]


def method_rows(done: list[dict]) -> dict[str, dict]:
    """method -> the figures the summary shows, for every step that ran bench.cost (whole or cut short)."""
    out = {}
    for s in done:
        c = s["result"]
        if s["step"] in ("inputs", "attention", "tower"):
            continue
        name = NAMES.get(s["step"], s["step"])
        if not isinstance(c, dict) or "1" not in c.get("batches", {}):
            out[name] = {"error": (s["error"] or f"exit {s['rc']} after {s['seconds']} s").removeprefix("error: ")}
            continue
        one = c["batches"]["1"]
        out[name] = {"engine": c["engine"] + (" compiled" if c.get("compiled") else ""), "compiles": c.get("compiles"),
                     "kernels": c.get("linear_kernels", []), "load_s": c["load_s"],
                     "prefill_ms": med(c["prefill_ms"]), "decode_ms_per_step": med(c["decode_ms_per_step"]),
                     "ms_per_pair": med(one["ms_per_pair"]),
                     "stream_pairs_per_s": max((b["stream"]["pairs_per_s"] for b in c["batches"].values()
                                                if b.get("stream")), default=None),
                     "peak_gib_b1": one["peak_bytes"] / GIB, "partial": bool(c.get("partial")), "cost": c}
    return out


def checks(rows: dict[str, dict]) -> list[dict]:
    """Issue 24's GPU checks (bf16's fast engine; fp8 and 4-bit against it)."""
    def get(m, k):
        return (rows.get(m) or {}).get(k)

    b = get("bf16", "decode_ms_per_step")
    out = [{"check": "bf16 decode ms/step b1 <= 7", "value": b, "limit": 7.0},
           {"check": "bf16 ms/pair b1 <= 500", "value": get("bf16", "ms_per_pair"), "limit": 500.0},
           {"check": "bf16 stream pairs/s >= 30", "value": get("bf16", "stream_pairs_per_s"), "limit": 30.0,
            "at_least": True}]
    for m in ("fp8", "bnb-nf4", "gptq-int4"):
        d = get(m, "decode_ms_per_step")
        out.append({"check": f"{m} decode ms/step b1 <= 0.6x bf16", "value": d and b and d / b, "limit": 0.6})
    for m in ("gptq-int4", "bnb-nf4"):
        out.append({"check": f"{m} pipeline peak GiB b1 <= 7", "value": get(m, "peak_gib_b1"), "limit": 7.0})
    for c in out:
        v = c["value"]
        c["result"] = ("not measured" if v is None else
                       "pass" if (v >= c["limit"] if c.get("at_least") else v <= c["limit"]) else "FAIL")
    return out


def fmt(x, digits=1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(rows: dict[str, dict]) -> list[str]:
    lines = ["| method | engine | compiles | linear kernels | load s | prefill ms b1 | decode ms/step b1 | ms/pair b1 "
             "| stream pairs/s | peak GiB b1 |", "|" + "---|" * 10]
    for m, x in rows.items():
        if "error" in x:
            lines.append(f"| {m} | failed: {x['error'][:200]} |" + " |" * 8)
            continue
        lines.append(f"| {m}{' (cut short)' if x['partial'] else ''} | {x['engine']} | {x['compiles']} | "
                     f"{'/'.join(x['kernels'])} | {fmt(x['load_s'])} | {fmt(x['prefill_ms'])} | "
                     f"{fmt(x['decode_ms_per_step'], 2)} | {fmt(x['ms_per_pair'])} | {fmt(x['stream_pairs_per_s'], 2)} | "
                     f"{fmt(x['peak_gib_b1'], 2)} |")
    return lines


def attention_lines(probe) -> list[str]:
    if not probe:
        return ["decode attention probe: not measured"]
    lines = ["| attention (slots, length) | SDPA picks | SDPA ms | math SDPA ms | grouped ms |", "|---|---|---|---|---|"]
    lines += [f"| {x['slots']}, {x['length']} | {x['sdpa_backend']} | {x['sdpa_ms']} | {x['math_ms']} | {x['grouped_ms']} |"
              for x in probe]
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
    env = load(out / "preflight.json") or {}
    done = steps(out)
    by_step = {s["step"]: s["result"] for s in done}
    rows = method_rows(done)
    tower, probe = by_step.get("tower"), by_step.get("attention")
    measured = {"environment": {"machine": env.get("device_name", "")}, "device": "cuda" if env.get("cuda_free_gib") else "cpu",
                "variants": [{"name": m, "method": m.split(" ")[0], "cost": x["cost"]} for m, x in rows.items()
                             if "cost" in x and x["cost"].get("encode_ms_b1")]}
    summary = {"environment": env, "steps": [{k: s[k] for k in ("step", "rc", "seconds", "budget", "error")} for s in done],
               "methods": {m: {k: v for k, v in x.items() if k != "cost"} for m, x in rows.items()},
               "checks": checks(rows), "attention": probe, "tower": tower, "projection": projection_rows(measured)}
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    print(f"\n## GPU check summary: {env.get('device_name', '?')} (capability {env.get('capability', '?')}), "
          "random weights")
    print("\n".join(table(rows) + [""] + attention_lines(probe) + [""] + tower_lines(tower)
                    + ["", "| check | value | result |", "|---|---|---|"]
                    + [f"| {c['check']} | {fmt(c['value'], 2)} | {c['result']} |" for c in summary["checks"]]))
    if summary["projection"]:
        print("\n" + "\n".join(summary["projection"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
