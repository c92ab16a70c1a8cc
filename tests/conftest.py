"""Fixtures: tiny checkpoints in the exact AITQE layout, written by bench.synthetic.checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.synthetic.checkpoints import FixtureSpec, random_checkpoint
from runtime.scorer import Scorer


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A random-weight AITQE checkpoint (bf16 safetensors, vision config in a sub-folder)."""
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-aitqe", FixtureSpec(), seed=0)


@pytest.fixture(scope="session")
def tiny_scorer(tiny_ckpt):
    return Scorer.from_pretrained(tiny_ckpt, device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    """A few ordinary RGB images of different sizes."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(64, 64), (120, 80), (50, 200)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def altered_copy(bundle, dest, rel: str):
    """A copy of `bundle` at `dest` whose file `rel` has its last byte flipped."""
    import shutil

    shutil.copytree(bundle, dest)
    f = dest / rel
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    return dest
