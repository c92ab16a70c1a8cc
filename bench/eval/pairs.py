"""The pairs bench evaluates: only the evaluation split of `calibration.split`, so no pair that a
calibrated method was built from is ever scored against it. They are written as a pairs file with
image files, so accuracy and cost read them exactly as `python -m runtime.score` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from calibration.split import RULE, demo_pairs, file_pairs
from runtime.atomic import write_text
from runtime.errors import InputError
from runtime.data.records import Pair

if TYPE_CHECKING:
    from runtime.formats.manifest import Manifest

DEMO_SEED = 1000  # the demo model trained on world seed 0


def evaluation_pairs(spec: str, limit: int | None, size: int, out: Path) -> tuple[Path, str, list[Pair]]:
    """`demo:N` (N demo-world evaluation pairs rendered at `size` px) or a pairs JSONL file (its evaluation
    pairs, at most `limit`), written to out/pairs.jsonl (+ out/pairs/*.png); returns that file, a
    description of the source, and the pairs with their image paths."""
    out.mkdir(parents=True, exist_ok=True)
    if spec.startswith("demo:"):
        try:
            n = int(spec.removeprefix("demo:"))
        except ValueError:
            raise InputError(f"--pairs {spec}: write demo:N, e.g. demo:200") from None
        (out / "pairs").mkdir(exist_ok=True)
        pairs = []
        for p in demo_pairs(n, DEMO_SEED, "evaluation", size):
            path = out / "pairs" / f"{p.id}.png"
            p.image.save(path)
            pairs.append(Pair(str(path), p.caption, p.id))
        source = f"demo world seed {DEMO_SEED}, evaluation split ({RULE} is calibration)"
    else:
        if not Path(spec).is_file():
            raise InputError(f"--pairs {spec}: no such file; give a pairs JSONL (id, image, caption) or demo:N")
        pairs = file_pairs(spec, limit or 10**12, "evaluation")
        source = f"{spec}, evaluation split ({RULE} is calibration)"
    path = out / "pairs.jsonl"
    write_text(path, "".join(json.dumps({"id": p.id, "image": str(Path(p.image).resolve()), "caption": p.caption},
                                        ensure_ascii=False) + "\n" for p in pairs))
    return path, source, pairs


def calibration_overlap(manifest: Manifest | None, pairs: list[Pair]) -> list[str]:
    """The ids of `pairs` that the bundle's calibration used."""
    if manifest is None or manifest.calibration is None:
        return []
    used = set(manifest.calibration.pair_ids)
    return [str(p.id) for p in pairs if str(p.id) in used]
