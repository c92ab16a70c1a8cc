"""`aitqe SUBCOMMAND ...`: one console script for every command; `aitqe score ARGS` is
`python -m runtime.score ARGS`, and so on (the table below).

Only the chosen command's module is imported, and only when it runs, so `aitqe --help` and
`aitqe score --help` answer at once. The modules are named, not imported, so `runtime` still uses
nothing of the other packages.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# subcommand -> (the `python -m` module, what it is for)
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("runtime.score", "score one pair, a JSONL/CSV file of pairs, or WebDataset/Parquet shards"),
    "select": ("runtime.select", "keep lists re-derived from a run's verdicts"),
    "review": ("runtime.review", "an HTML page of a run: score histograms, the lowest-scored and replaced pairs"),
    "demo-shards": ("runtime.demo.shards", "demo-world shards in img2dataset's layouts, to try it"),
    "quantize": ("quantize", "a bundle with an 8/4-bit or fp8 backbone and/or an ONNX tower"),
    "quantize-backbone": ("quantize.backbone", "quantize only the backbone"),
    "quantize-vision": ("quantize.vision", "export only the vision tower"),
    "export": ("quantize.export", "a checkpoint or bundle as a LLaVA folder, or a checkpoint as GGUF"),
    "calibrate": ("calibration", "a calibration set from your own pairs (for GPTQ)"),
    "bench": ("bench", "compare bundles with the 16-bit model: accuracy, speed, memory, size"),
    "report": ("bench.report", "rewrite a benchmark's report and plots"),
    "bench-demo": ("bench.demo", "judge a model against the demo world's own rules"),
    "bench-shards": ("bench.shards", "pairs/s from shards by number of reader workers"),
    "load-memory": ("bench.load_memory", "peak RAM of loading a checkpoint"),
    "image-memory": ("bench.image_memory", "peak RAM of scoring large images"),
    "soak": ("bench.soak", "memory over a long stream"),
    "tower": ("bench.tower", "time the vision tower alone"),
    "projection": ("bench.projection", "project speed on consumer GPUs"),
    "attention": ("bench.attention", "time the decode attention at the decode shapes"),
    "device-summary": ("bench.device_summary", "summarise a GPU check's results"),
    "train-demo": ("runtime.demo.train", "train the demo model"),
    "demo-examples": ("runtime.demo.examples", "redraw the example images"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {what}  (python -m {module})" for name, (module, what) in COMMANDS.items())
    return (f"usage: aitqe SUBCOMMAND [ARGS ...]\n\nEvery command of aitqe-edge: `aitqe SUBCOMMAND ARGS` is "
            f"`python -m MODULE ARGS`.\n\nsubcommands:\n{rows}\n\n"
            "aitqe SUBCOMMAND --help: that command's options")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: aitqe: unknown subcommand {name!r}; one of: {', '.join(COMMANDS)} (aitqe --help)",
              file=sys.stderr)
        return 2
    module = COMMANDS[name][0]
    spec = importlib.util.find_spec(module)
    if spec is None:
        print(f"error: aitqe {name}: this install has no {module}; reinstall aitqe-edge", file=sys.stderr)
        return 1
    target = f"{module}.__main__" if spec.submodule_search_locations else module
    return importlib.import_module(target).main(rest)


if __name__ == "__main__":
    sys.exit(main())
