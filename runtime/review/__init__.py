"""`python -m runtime.review`: one self-contained HTML page to look at a run's verdicts.

    python -m runtime.review --verdicts PATH --output report.html [--input SHARDS_OR_PAIRS]
        [--lowest N] [--sample N] [--seed N] [--thumb-size PX]

PATH is a shard run's verdicts folder (`*.aitqe.parquet`) or a pairs run's verdicts JSONL. The page
holds the score histograms of every row (overall and per shard), the run's settings, and a table,
sortable and filterable, of the lowest-scored rows, the replaced ones, those without a score and a
seeded random sample of the rest, with the image (read from `--input`, embedded as a small JPEG),
caption, recaption with the changed words marked, overall, sub-scores and expected score. It opens
offline in any browser: no script, style or image is fetched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; pass 0 or more")
    return n


def _px(text: str) -> int:
    n = int(text)
    if not 16 <= n <= 512:
        raise argparse.ArgumentTypeError(f"{text} is not between 16 and 512 pixels")
    return n


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m runtime.review", description="Write one self-contained HTML page to look at a run's verdicts.")
    p.add_argument("--verdicts", required=True, type=Path, metavar="PATH",
                   help="a shard run's --output folder (*.aitqe.parquet) or a pairs run's verdicts .jsonl")
    p.add_argument("--output", required=True, type=Path, metavar="HTML", help="the HTML file to write")
    p.add_argument("--input", metavar="SHARDS_OR_PAIRS", help="the run's --input (shards or pairs file), for thumbnails and captions "
                                   "a run did not record; without it rows show 'no image'")
    p.add_argument("--lowest", type=_count, default=100, metavar="N", help="the lowest-scored rows shown (default 100)")
    p.add_argument("--sample", type=_count, default=200, metavar="N",
                   help="at most this many replaced rows, rows without a score, and other rows, each drawn "
                        "at random (default 200)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="the random sample's seed (default 0)")
    p.add_argument("--thumb-size", type=_px, default=96, metavar="PX", help="thumbnail side in pixels, 16-512 (default 96)")
    return p.parse_args(argv)


def build_report(verdicts: Path, output: Path, source: str | None = None, lowest: int = 100, sample: int = 200,
                 seed: int = 0, thumb_size: int = 96) -> str:
    """Write the review page of the run at `verdicts` (its input at `source`: shards or a pairs file) to
    `output`; the `showing K of N pairs ...` line."""
    from runtime.atomic import write_text
    from runtime.errors import InputError
    from runtime.review.inputs import attach
    from runtime.review.page import render, showing
    from runtime.review.survey import survey
    from runtime.review.verdicts import fetch, run_settings, units

    if output.is_dir():
        raise InputError(f"--output {output}: a folder; pass the HTML file to write, e.g. {output / 'report.html'}")
    found = units(verdicts)
    surveyed = survey(found, lowest, sample, seed)
    by_unit: dict[int, set[int]] = {}
    for u, pos in surveyed.picks:
        by_unit.setdefault(u, set()).add(pos)
    rows = [(row, surveyed.picks[u, row.pos]) for u in sorted(by_unit) for row in fetch(found[u], by_unit[u])]
    if source is not None:
        attach([r for r, _ in rows], found, source, thumb_size)
    write_text(output, render(surveyed, rows, run_settings(found[0]), str(verdicts), source))
    return f"{showing(surveyed, len(rows))}, {sum(r.thumb is not None for r, _ in rows):,} with an image"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from runtime.errors import InputError

    try:
        said = build_report(args.verdicts, args.output, args.input, args.lowest, args.sample, args.seed, args.thumb_size)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.output}: {said}", file=sys.stderr)
    return 0
