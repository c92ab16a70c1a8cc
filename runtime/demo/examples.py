"""The example images in `examples/`, rendered by the demo world: `python -m runtime.demo.examples [DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.demo.world import Obj, Scene, description, render

EXAMPLES = {
    "four_shapes": Scene((Obj("cross", "red", "big", 0, 1), Obj("triangle", "red", "big", 0, 2),
                          Obj("square", "black", "small", 1, 1), Obj("cross", "yellow", "big", 2, 0)),
                         "charcoal", 0, 6, 7),
    "green_square_red_cross": Scene((Obj("square", "green", "big", 0, 2), Obj("cross", "red", "small", 1, 0)),
                                    "grey", 0, 0, 0),
    "yellow_shapes_sale": Scene((Obj("circle", "yellow", "small", 0, 2), Obj("cross", "yellow", "big", 1, 1)),
                                "slate", 0, 0, 0, text="SALE", text_row=2),
    "yellow_triangle": Scene((Obj("triangle", "yellow", "big", 2, 2),), "grey", 12, 0, 0),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.demo.examples", description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default="examples", help="where to write the PNGs (default: examples)")
    out = Path(p.parse_args(argv).folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, scene in EXAMPLES.items():
        render(scene).save(out / f"{name}.png")
        print(f"{out / name}.png: {description(scene)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
