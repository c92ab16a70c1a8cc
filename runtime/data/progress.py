"""What a batch run shows on stderr while it works: one progress bar look (pairs, rate, ETA) for
pairs files, shards and Ray, and lines that print above the bar without breaking it. `quiet`
shows no bar; errors and summaries are printed whatever it says."""

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
