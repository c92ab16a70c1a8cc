"""Which pairs may calibrate a quantizer and which may evaluate one: the pair's id decides, by hash.

A pair is a calibration pair when the first 8 bytes of sha256(id as text), as an integer, modulo 100
fall below CALIBRATION_PERCENT; every other pair is an evaluation pair. `python -m calibration`
draws only calibration pairs and `python -m bench` evaluates only evaluation pairs, so the two sets
are disjoint by construction, whatever file or seed each reads. A bundle's manifest records the ids
its calibration used (`RULE` included), so bench can also refuse any overlap that another tool made.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from runtime.errors import InputError
from runtime.data.jsonl import read_jsonl
from runtime.data.records import Pair

CALIBRATION_PERCENT = 20
RULE = f"sha256(id)[:8] % 100 < {CALIBRATION_PERCENT}"


def is_calibration(pair_id: object) -> bool:
    digest = hashlib.sha256(str(pair_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < CALIBRATION_PERCENT


def split_of(pair_id: object) -> str:
    return "calibration" if is_calibration(pair_id) else "evaluation"


def demo_id(seed: int, index: int) -> str:
    return f"demo-{seed}-{index}"


def demo_indices(n: int, seed: int, split: str) -> list[int]:
    """The indices of the first `n` examples of demo world `seed` whose ids fall in `split`."""
    out, i = [], 0
    while len(out) < n:
        if split_of(demo_id(seed, i)) == split:
            out.append(i)
        i += 1
    return out


def demo_examples(n: int, seed: int, split: str, size: int | None = None) -> list:
    """Those examples (runtime.demo.world.Example), rendered at `size` px (default: the world's own size),
    with their ids."""
    from runtime.demo.world import IMAGE_SIZE, make_example

    return [(demo_id(seed, i), make_example(seed, i, size or IMAGE_SIZE)) for i in demo_indices(n, seed, split)]


def demo_pairs(n: int, seed: int, split: str, size: int | None = None) -> list[Pair]:
    """Those examples as pairs."""
    return [Pair(e.image, e.caption, pair_id) for pair_id, e in demo_examples(n, seed, split, size)]


def file_pairs(path: str | Path, n: int, split: str, seed: int | None = None) -> list[Pair]:
    """Up to `n` usable pairs of a pairs file that fall in `split`: in file order, or sampled with `seed`."""
    rows = [r for r in read_jsonl(path) if r.error is None]
    if not rows:
        raise InputError(f"{path}: no usable pairs; each line needs id, image, caption")
    rows = [r for r in rows if split_of(r.id) == split]
    if not rows:
        raise InputError(f"{path}: none of its pair ids falls in the {split} split ({RULE}); add pairs")
    if seed is not None:
        random.Random(seed).shuffle(rows)
    return [Pair(r.image, r.caption, r.id) for r in rows[:n]]
