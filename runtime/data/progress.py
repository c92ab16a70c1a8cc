"""What a batch run shows on stderr while it works: one progress bar look (pairs, rate, ETA) for
pairs files, shards and Ray, lines that print above the bar without breaking it, and the demo
model's note, once, when scoring starts. `quiet` shows no bar; errors, the note and summaries are
printed whatever it says."""

from __future__ import annotations

import sys


def bar(total: int | None, quiet: bool, initial: int = 0):
    """A tqdm bar of pairs on stderr (`total` None: count and rate, no ETA); disabled when quiet."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="pair", file=sys.stderr, disable=quiet, dynamic_ncols=True)


def say(line: str) -> None:
    """One line on stderr, above a progress bar if one is showing."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def say_demo(opts) -> None:
    """A batch run on the demo model (`opts.demo`) says so once, as scoring starts (every verdict
    carries the note too)."""
    from runtime.demo import DEMO_NOTE

    if opts.demo:
        say(f"note: --model demo: {DEMO_NOTE}; every verdict carries this note (a real run: "
            "--model hanhuang22/AITQE)")
