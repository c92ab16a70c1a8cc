"""The images (and, for runs that did not record it, the captions) of the rows the review page shows,
read from the run's `--input` through the registered dataset readers (`runtime.data.formats`):
shards are matched to verdicts files by name and rows by key, a pairs file's rows by input line.
Each image becomes a small JPEG data URI; one that cannot be read leaves the row without one.
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

from runtime.errors import InputError
from runtime.review.verdicts import Row, Unit


def thumbnail(image: object, px: int) -> str | None:
    """A JPEG data URI of `image` (a path, encoded bytes or a PIL image) at most `px` square, or None."""
    from PIL import Image, ImageOps

    from runtime.files import open_regular

    try:
        if isinstance(image, (str, Path)):  # never a FIFO or a device: they could block the page forever
            with open_regular(image, f"image {image}") as f:
                image = f.read()
        im = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))
        im.draft("RGB", (px, px))  # JPEG: decode at a reduced scale, not the whole photo
        im = ImageOps.exif_transpose(im)  # a copy, upright as a photo viewer shows it
        im.thumbnail((px, px))
        if im.mode != "RGB":  # transparency over white, as a browser shows it on this page
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, "white")
            im.paste(rgba, mask=rgba.getchannel("A"))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    except Exception:  # untrusted bytes: PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fill(records, wanted: dict, match, px: int) -> None:
    """Give each wanted row (by `match(record)`: its key or line) its thumbnail and missing caption."""
    for rec in records:
        row = wanted.pop(match(rec), None)
        if row is None:
            continue
        if rec.image is not None:
            row.thumb = thumbnail(rec.image, px)
        if row.caption is None:
            row.caption = rec.caption
        if not wanted:
            return


def attach(rows: list[Row], units: list[Unit], spec: str, px: int) -> None:
    """Thumbnails (and missing captions) for `rows` from the run's input `spec`, in place."""
    from runtime.data.formats import pairs_format, read_records
    from runtime.data.records import Shard, find_shards, is_shard_input
    from runtime.data.run import RunOptions

    opts = RunOptions(output=Path("."), quiet=True)
    pairs_run = any(u.jsonl for u in units)
    if pairs_run:
        path = Path(spec)
        if is_shard_input(spec) or not path.is_file():
            raise InputError(f"--input {spec}: not a pairs file, and --verdicts holds a pairs run's verdicts; "
                             "pass the pairs file the run scored")
        shards = {u.name: Shard(path, pairs_format(path).name) for u in units}
    else:
        if Path(spec).is_file() and not is_shard_input(spec):
            raise InputError(f"--input {spec}: a pairs file, but --verdicts holds shard verdicts; pass the "
                             "shards the run scored")
        by_name = {s.name: s for s in find_shards(spec)}
        shards = {u.name: by_name[u.name] for u in units if u.name in by_name}
    for name, shard in shards.items():
        mine = [r for r in rows if r.unit == name]
        if not mine:
            continue
        match = (lambda r: r.line) if pairs_run else (lambda r: r.key)  # a Record and a Row alike
        try:
            _fill(read_records(shard, opts), {match(r): r for r in mine}, match, px)
        except InputError as e:  # a shard that cannot be read (any more): its rows show no image
            print(f"warning: {e}", file=sys.stderr)
