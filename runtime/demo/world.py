"""A deterministic synthetic image-caption world that a tiny model can learn to judge like AITQE.

Scene: 1-4 flat-coloured objects on a 3x3 grid (one object per cell, so none overlap), each with a
shape (circle, square, triangle, cross), a colour (red, green, blue, yellow, black, white) and a size
(small, big), on a grey-ish plain, two-tone or mildly noisy background that is never close to an
object colour. About 30% of scenes also show a word or number from TEXTS, written across the whole
top or bottom row (no objects there). Everything is drawn from `random.Random(seed * 1_000_003 +
index)`; no global or salted randomness.

Description (the Recaption): objects in reading order (row, then column), comma separated, as
"<size> <colour> <shape> <position>", then "; text: <WORD>" if there is text, e.g.
"big red circle top left, small blue square bottom right; text: SALE". Positions: top left, top,
top right, left, center, right, bottom left, bottom, bottom right.

Caption kinds. A wrong_* caption changes exactly one thing; what it changes is a function of the
scene and the kind only (seeded from crc32 of description and kind), so `verdict_for` can name it.
The rng given to `caption_for` only picks the wording (prefix, text phrasing, vague/unrelated
sentence, garbling).

    kind            what the caption says                                  Overall TQ ITM OD SU
    exact           the description (maybe a prefix / other text phrasing)    9     9  9   9  9
    verbose         the description wrapped in flowery words                  8     6  9   9  8
    wrong_position  one object moved to another free cell                     6     8  6   7  5
    wrong_text      another word than the image's, or a word where none       6     8  7   9  7
    wrong_colour    one object's colour changed                               5     8  5   5  6
    wrong_shape     one object's shape changed                                5     8  5   4  6
    wrong_count     one object added or dropped (1 object: added; 4: dropped) 4     8  4   4  4
    garbled         description shuffled, or with typos, or words dropped     4     2  6   6  4
    vague           "some shapes", "an image", ...                            3     7  3   1  3
    unrelated       about something else ("a cat sleeping on a sofa")         1     8  1   1  1

TQ = Text Quality, ITM = Image-Text Matching, OD = Object Detail, SU = Semantic Understanding.
Text/Chart Description score (TCD): if the image has text, wrong_text -> 2, vague or unrelated
(text not mentioned) -> 1, garbled -> 5, any other kind -> 9; if the image has no text,
wrong_text (claims text) -> 2, any other kind -> 8.

The verdict is an ordered dict with keys Recaption, Overall Score ("<n><Overall>"), Overall
Explanation, then "<name> Score" (int) and "<name> Explanation" for each of ASPECTS; explanations
are short templates: Image-Text Matching names the change of a wrong_* kind ("circle is red, not
blue.", "2 objects, not 3.", "text is SALE, not OPEN."), Object Detail counts the objects named
right ("2 of 3 objects right."). `verdict_text` is AITQE's output format.

Longer than the project's other modules on purpose: it is one specification (the tables above, the
drawing, the captions and the verdicts) on which the shipped demo checkpoint was trained, read as one.
"""
from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

IMAGE_SIZE = 48  # pixels; the demo tower cuts it into 3x3 patches, one per grid cell
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 225),
           "yellow": (245, 215, 20), "black": (15, 15, 15), "white": (248, 248, 248)}
SIZES = ("small", "big")
POSITIONS = (("top left", "top", "top right"), ("left", "center", "right"),
             ("bottom left", "bottom", "bottom right"))
BACKGROUNDS = {"grey": (178, 178, 178), "sand": (196, 178, 140), "mist": (160, 182, 196),
               "charcoal": (72, 72, 72), "plum": (84, 62, 84), "slate": (58, 78, 94)}
TEXTS = ("SALE", "OPEN", "STOP", "CAT", "SUN", "EXIT", "42", "7", "99", "100")
KINDS = ("exact", "verbose", "wrong_position", "wrong_text", "wrong_colour", "wrong_shape",
         "wrong_count", "garbled", "vague", "unrelated")
KIND_WEIGHTS = (20, 7, 10, 8, 10, 10, 10, 10, 8, 7)
ASPECTS = ("Text Quality", "Image-Text Matching", "Object Detail", "Semantic Understanding",
           "Text/Chart Description")
# kind -> (overall, text quality, image-text matching, object detail, semantic understanding)
RULES = {"exact": (9, 9, 9, 9, 9), "verbose": (8, 6, 9, 9, 8), "wrong_position": (6, 8, 6, 7, 5),
         "wrong_text": (6, 8, 7, 9, 7), "wrong_colour": (5, 8, 5, 5, 6),
         "wrong_shape": (5, 8, 5, 4, 6), "wrong_count": (4, 8, 4, 4, 4),
         "garbled": (4, 2, 6, 6, 4), "vague": (3, 7, 3, 1, 3), "unrelated": (1, 8, 1, 1, 1)}
# kind -> explanations (overall, text quality, image-text matching or None: name the change, semantic)
EXPL = {"exact": ("accurate and complete.", "clear.", "matches image.", "scene understood."),
        "verbose": ("accurate but wordy.", "fluent but wordy.", "matches image.", "scene understood."),
        "wrong_position": ("one position wrong.", "clear.", None, "layout wrong."),
        "wrong_text": ("text wrong.", "clear.", None, "text misread."),
        "wrong_colour": ("one colour wrong.", "clear.", None, "mostly understood."),
        "wrong_shape": ("one shape wrong.", "clear.", None, "mostly understood."),
        "wrong_count": ("object count wrong.", "clear.", None, "scene miscounted."),
        "garbled": ("garbled wording.", "ungrammatical, typos.", "right content, badly written.",
                    "meaning hard to follow."),
        "vague": ("too vague.", "clear but empty.", "says almost nothing.", "nothing specific."),
        "unrelated": ("unrelated to image.", "clear.", "about something else.", "wrong scene.")}
VAGUE = ("some shapes", "an image", "a few shapes", "shapes on a background", "a simple picture",
         "some objects")
UNRELATED = ("a dog running on a beach", "a bowl of fruit on a table", "two people riding bikes",
             "a city street at night", "a cup of coffee", "a mountain lake at sunrise",
             "a cat sleeping on a sofa", "a plate of pasta", "children playing football",
             "an old bridge over a river")
PREFIXES = ("", "", "", "image of ", "a picture of ")
TEXT_STYLES = ("; text: {}", "; text: {}", '; text "{}"', " with text {}")
VERBOSE = (("a lovely picture of ", ", neatly arranged"), ("what a charming image: ", " on a calm backdrop"),
           ("beautifully drawn here: ", ", so nice to see"))


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    row: int
    col: int

    @property
    def position(self) -> str:
        return POSITIONS[self.row][self.col]

    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape} {self.position}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]      # reading order, one per grid cell
    background: str               # key of BACKGROUNDS
    gradient: int                 # top is base + gradient, bottom base - gradient (0: plain)
    noise: int                    # per-pixel noise amplitude (0: none)
    noise_seed: int
    text: str | None = None
    text_row: int | None = None   # 0 (top) or 2 (bottom) when text is set


@dataclass(frozen=True)
class Example:
    image: Image.Image   # RGB, size x size
    caption: str
    kind: str            # one of KINDS
    description: str     # the true description, == verdict["Recaption"]
    verdict: dict        # ordered as in the module docstring
    scene: Scene


def _sorted(objs) -> tuple[Obj, ...]:
    return tuple(sorted(objs, key=lambda o: (o.row, o.col)))


def description(scene: Scene) -> str:
    """The canonical sentence (the Recaption) of a scene."""
    return ", ".join(o.phrase() for o in scene.objects) + (f"; text: {scene.text}" if scene.text else "")


def _random_obj(rng: random.Random, row: int, col: int) -> Obj:
    return Obj(rng.choice(SHAPES), rng.choice(tuple(COLOURS)), rng.choice(SIZES), row, col)


def sample_scene(rng: random.Random) -> Scene:
    text = rng.choice(TEXTS) if rng.random() < 0.3 else None
    text_row = rng.choice((0, 2)) if text else None
    cells = [(r, c) for r in range(3) for c in range(3) if r != text_row]
    n = rng.choices((1, 2, 3, 4), weights=(30, 30, 25, 15))[0]
    objs = _sorted(_random_obj(rng, r, c) for r, c in rng.sample(cells, n))
    return Scene(objs, rng.choice(tuple(BACKGROUNDS)), rng.choice((0, 0, 12, -12)),
                 rng.choice((0, 0, 6)), rng.getrandbits(32), text, text_row)


@lru_cache(maxsize=8)
def _font(px: int):
    return ImageFont.load_default(size=px)


def object_centre(obj: Obj, size: int = IMAGE_SIZE) -> tuple[int, int]:
    cell = size / 3
    return int((obj.col + 0.5) * cell), int((obj.row + 0.5) * cell)


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    ramp = np.linspace(scene.gradient, -scene.gradient, size, dtype=np.float32)
    arr = np.broadcast_to(base + ramp[:, None, None], (size, size, 3)).copy()
    if scene.noise:
        arr += np.random.default_rng(scene.noise_seed).integers(-scene.noise, scene.noise + 1, arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    cell = size / 3
    for o in scene.objects:
        cx, cy = (o.col + 0.5) * cell, (o.row + 0.5) * cell
        h = cell * (0.44 if o.size == "big" else 0.26)
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse((cx - h, cy - h, cx + h, cy + h), fill=fill)
        elif o.shape == "square":
            draw.rectangle((cx - h * 0.9, cy - h * 0.9, cx + h * 0.9, cy + h * 0.9), fill=fill)
        elif o.shape == "triangle":
            draw.polygon(((cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)), fill=fill)
        else:
            a = h * 0.36
            draw.rectangle((cx - h, cy - a, cx + h, cy + a), fill=fill)
            draw.rectangle((cx - a, cy - h, cx + a, cy + h), fill=fill)
    if scene.text:
        ink = (0, 0, 0) if sum(BACKGROUNDS[scene.background]) > 3 * 128 else (255, 255, 255)
        draw.text((size / 2, (scene.text_row + 0.5) * cell), scene.text, font=_font(round(size * 0.3)),
                  fill=ink, anchor="mm", stroke_width=max(1, size // 96), stroke_fill=ink)
    return img


def mutation(scene: Scene, kind: str) -> tuple[tuple[Obj, ...], str | None, str]:
    """(claimed objects, claimed text, what is wrong) of a wrong_* kind; a function of scene and kind."""
    rng = random.Random(zlib.crc32(f"{description(scene)}|{kind}".encode()))
    objs, text = list(scene.objects), scene.text
    i = rng.randrange(len(objs))
    o = objs[i]
    if kind == "wrong_colour":
        new = rng.choice([c for c in COLOURS if c != o.colour])
        objs[i] = Obj(o.shape, new, o.size, o.row, o.col)
        return _sorted(objs), text, f"{o.shape} is {o.colour}, not {new}."
    if kind == "wrong_shape":
        new = rng.choice([s for s in SHAPES if s != o.shape])
        objs[i] = Obj(new, o.colour, o.size, o.row, o.col)
        return _sorted(objs), text, f"{o.colour} {o.shape}, not {new}."
    taken = {(p.row, p.col) for p in objs}
    free = [(r, c) for r in range(3) for c in range(3) if r != scene.text_row and (r, c) not in taken]
    if kind == "wrong_position":
        r, c = rng.choice(free)
        objs[i] = Obj(o.shape, o.colour, o.size, r, c)
        return _sorted(objs), text, f"{o.colour} {o.shape} at {o.position}, not {POSITIONS[r][c]}."
    if kind == "wrong_count":
        n = len(objs)
        if n == 1 or (n < 4 and rng.random() < 0.5):
            objs.append(_random_obj(rng, *rng.choice(free)))
        else:
            del objs[i]
        return _sorted(objs), text, f"{_count(n)}, not {len(objs)}."
    if kind == "wrong_text":
        new = rng.choice([t for t in TEXTS if t != text])
        return scene.objects, new, (f"text is {text}, not {new}." if text else f"no text, not {new}.")
    raise ValueError(f"not a wrong_* kind: {kind!r}")


def _check(kind: str) -> None:
    if kind not in RULES:
        raise ValueError(f"unknown caption kind {kind!r}; use one of {', '.join(KINDS)}")


def _count(n: int) -> str:
    return f"{n} object{'' if n == 1 else 's'}"


def _phrase(objects, text: str | None, rng: random.Random) -> str:
    out = rng.choice(PREFIXES) + ", ".join(o.phrase() for o in objects)
    return out + (rng.choice(TEXT_STYLES).format(text) if text else "")


def _garble(desc: str, rng: random.Random) -> str:
    words = desc.split()
    mode = rng.randrange(3)
    if mode == 0:
        rng.shuffle(words)
    elif mode == 1:
        for j, w in enumerate(words):
            if len(w) >= 3 and rng.random() < 0.5:
                k = rng.randrange(len(w) - 1)
                words[j] = w[:k] + w[k + 1] + w[k] + w[k + 2:]
    else:
        keep = [w for w in words if rng.random() < 0.7] or words[:1]
        words = keep + [rng.choice(keep)]
    out = " ".join(words)
    return out if out != desc else " ".join(reversed(desc.split()))


def caption_for(scene: Scene, kind: str, rng: random.Random) -> str:
    """A caption of the given kind for the scene; rng picks only the wording."""
    _check(kind)
    if kind == "exact":
        return _phrase(scene.objects, scene.text, rng)
    if kind == "verbose":
        pre, post = rng.choice(VERBOSE)
        text = f"; text: {scene.text}" if scene.text else ""
        return pre + ", ".join(o.phrase() for o in scene.objects) + post + text
    if kind == "garbled":
        return _garble(description(scene), rng)
    if kind == "vague":
        return rng.choice(VAGUE)
    if kind == "unrelated":
        return rng.choice(UNRELATED)
    objs, text, _ = mutation(scene, kind)
    return _phrase(objs, text, rng)


def _tcd(scene: Scene, kind: str) -> tuple[int, str]:
    t = scene.text
    if kind == "wrong_text":
        return 2, mutation(scene, kind)[2]
    if not t:
        return 8, "no text in image."
    if kind in ("vague", "unrelated", "garbled"):
        return (5, f"text {t}, garbled.") if kind == "garbled" else (1, f"text {t} not mentioned.")
    return 9, f"text {t} correct."


def verdict_for(scene: Scene, kind: str) -> dict:
    """AITQE-style verdict for a caption of `kind` about `scene`; see the module docstring."""
    _check(kind)
    overall, tq, itm, od, su = RULES[kind]
    n = len(scene.objects)
    o_expl, tq_expl, itm_expl, su_expl = EXPL[kind]
    itm_expl = itm_expl or mutation(scene, kind)[2]
    if kind in ("exact", "verbose", "wrong_text"):
        od_expl = f"all {_count(n)} right."
    elif kind in ("wrong_colour", "wrong_shape", "wrong_position"):
        od_expl = f"{n - 1} of {_count(n)} right."
    elif kind == "wrong_count":
        od_expl = "extra object claimed." if len(mutation(scene, kind)[0]) > n else "one object missing."
    elif kind == "garbled":
        od_expl = "objects hard to read."
    else:
        od_expl = "no objects named."
    tcd, tcd_expl = _tcd(scene, kind)
    scores, expls = (tq, itm, od, su, tcd), (tq_expl, itm_expl, od_expl, su_expl, tcd_expl)
    v = {"Recaption": description(scene), "Overall Score": f"{overall}<Overall>",
         "Overall Explanation": o_expl}
    for name, s, e in zip(ASPECTS, scores, expls):
        v[f"{name} Score"] = s
        v[f"{name} Explanation"] = e
    return v


def verdict_text(verdict: dict) -> str:
    return json.dumps(verdict, ensure_ascii=False)


def _draw(seed: int, index: int, kind: str | None):
    rng = random.Random(seed * 1_000_003 + index)
    scene = sample_scene(rng)
    kind = kind or rng.choices(KINDS, weights=KIND_WEIGHTS)[0]
    return scene, kind, caption_for(scene, kind, rng)


def make_example(seed: int, index: int, size: int = IMAGE_SIZE, kind: str | None = None) -> Example:
    """Example number `index` of world `seed`; the scene does not depend on `kind`."""
    scene, kind, caption = _draw(seed, index, kind)
    verdict = verdict_for(scene, kind)
    return Example(render(scene, size), caption, kind, verdict["Recaption"], verdict, scene)


def examples(seed: int, n: int, size: int = IMAGE_SIZE) -> Iterator[Example]:
    return (make_example(seed, i, size) for i in range(n))


def corpus_texts(seed: int, n: int) -> Iterator[str]:
    """Captions and verdict texts of n examples, without rendering images (for tokenizer training)."""
    for i in range(n):
        scene, kind, caption = _draw(seed, i, None)
        yield caption
        yield verdict_text(verdict_for(scene, kind))
