"""The export's pixels are the runtime's: the README's transformers usage (`runtime.image.load_image`, then
the exported processor) gives `runtime.image.preprocess`'s pixel values exactly, on the inputs where a
plain PIL conversion or an unconverted image differ (palette with a transparent colour, RGBA, LA, CMYK,
EXIF-rotated JPEG); a caption holding `<image>` is refused by the processor, as the README states."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import AutoProcessor

from quantize.export import main
from runtime.image import load_image, preprocess
from runtime.model.config import load_config
from tests.test_golden import GOLDEN

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("palette-transparent.png", "rgba.png", "la.png", "cmyk.jpg", "exif-rotated.jpg")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("pixels") / "llava"
    assert main(["--model", str(GOLDEN / "checkpoint"), "--output", str(out)]) == 0
    return AutoProcessor.from_pretrained(out, backend="pil")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kinds")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    alpha = rng.integers(0, 255, (37, 53), dtype=np.uint8)
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(folder / KINDS[0], transparency=3)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / KINDS[1])
    Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").save(folder / KINDS[2])
    Image.fromarray(rgb).convert("CMYK").save(folder / KINDS[3])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    Image.fromarray(rgb).save(folder / KINDS[4], exif=exif)
    return folder


@pytest.mark.parametrize("kind", KINDS)
def test_the_readmes_usage_gives_the_runtimes_pixels(exported, images, kind):
    spec = load_config(GOLDEN / "checkpoint").image
    want = preprocess([load_image(images / kind)], spec).numpy()
    got = exported(images=load_image(images / kind), text="<image>", return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(got, want)


def test_the_readme_converts_images_as_aitqe_does():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    export = readme[readme.index("## Export as a standard LLaVA checkpoint"):]
    export = export[: export.index("\n## ", 1)]
    images = re.findall(r"images=([^,]+),", export) + re.findall(r'"image": ([^}0-9][^}]*)}', export)
    assert images and all(i.startswith("load_image(") for i in images), images
    assert 'convert("RGB")' not in export.replace('Image.open(p).convert("RGB")` differs', "")
    assert "`<image>`" in export


def test_a_caption_holding_the_image_placeholder_is_refused_as_the_readme_says(exported, images):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a <image> tag"}]}]
    with pytest.raises(ValueError):
        exported(images=load_image(images / KINDS[1]), text=exported.apply_chat_template(messages), return_tensors="np")
