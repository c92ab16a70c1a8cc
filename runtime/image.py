"""Load untrusted image files and turn them into SigLIP pixel tensors for the AITQE scorer.

The preprocessing is written by hand instead of calling transformers' SigLIP image processor:
that processor's backend differs across transformers versions (torchvision "fast" vs PIL), which
changes the pixels slightly, and we need our own validation of untrusted files (missing, corrupt,
truncated, tiny, decompression bombs, odd color modes) with clear one-line errors.
`tests/test_image.py` checks that `preprocess` equals transformers' (PIL) processor output.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from runtime.errors import InputError

MAX_PIXELS = 89_478_485  # decompression-bomb limit (PIL's default warning threshold)


@dataclass(frozen=True)
class ImageSpec:
    """How the vision tower wants pixels (defaults: SigLIP so400m-patch14-384)."""

    size: int = 384  # square side
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = 3  # PIL BICUBIC
    rescale: float = 1 / 255

    @classmethod
    def from_processor_config(cls, d: dict) -> ImageSpec:
        """Build from a HF preprocessor_config.json dict; missing keys take the defaults above."""
        off = [k for k in ("do_resize", "do_rescale", "do_normalize") if d.get(k, True) is False]
        if off:
            raise InputError(f"preprocessor config: {', '.join(off)} false is not supported; AITQE's SigLIP "
                             "processor resizes, rescales and normalizes")
        size = d.get("size", cls.size)
        if isinstance(size, dict):
            if "shortest_edge" in size and "height" not in size:
                size = size["shortest_edge"]
            elif size.get("height") != size.get("width"):
                raise InputError(f"preprocessor config: image size {size} is not square; "
                                 "the vision tower needs a square size, fix preprocessor_config.json")
            else:
                size = size.get("height")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InputError(f"preprocessor config: bad image size {size!r}; "
                             "expected a positive int or {'height': N, 'width': N}")

        def triple(key: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
            v = d.get(key, default)
            v = [v] * 3 if isinstance(v, (int, float)) else list(v)
            if len(v) != 3:
                raise InputError(f"preprocessor config: {key} must have 3 values, got {v!r}")
            return tuple(float(x) for x in v)  # type: ignore[return-value]

        return cls(size=size, mean=triple("image_mean", cls.mean), std=triple("image_std", cls.std),
                   resample=int(d.get("resample", cls.resample)),
                   rescale=float(d.get("rescale_factor", cls.rescale)))


def _show(path: str) -> str:
    return path if path.isprintable() else repr(path)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an (untrusted) image file; return a fully loaded RGB image or raise InputError.

    Only the first frame of animated images is used. EXIF orientation is NOT applied: pixels are
    kept as stored, like the original AITQE code (which does not call exif_transpose). Small images
    are kept, as the original's inference processor keeps them.
    """
    p = os.fspath(path)
    where = f"image {_show(p)}"
    if os.path.isdir(p):
        raise InputError(f"{where}: is a directory, not an image file; pass the path of an image file")
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        raise InputError(f"{where}: file does not exist; check the path") from None
    except PermissionError:
        raise InputError(f"{where}: permission denied; make the file readable") from None
    except (OSError, ValueError) as e:  # ValueError: NUL byte or unencodable characters in the path
        raise InputError(f"{where}: cannot read the file ({_one_line(e)}); check the path") from None
    with f:
        return _decode(f, where)


def load_image_bytes(data: bytes, name: str) -> Image.Image:
    """Like `load_image`, for an image held in memory (a shard member or a Parquet cell); `name`
    says where it came from in errors."""
    if not data:
        raise InputError(f"image {_show(name)}: file is empty; pass a JPEG/PNG/WebP/... image")
    return _decode(io.BytesIO(data), f"image {_show(name)}")


def _decode(f: BinaryIO, where: str) -> Image.Image:
    """An open binary file of an untrusted image -> a fully loaded RGB image, or InputError."""
    with warnings.catch_warnings():
        # PIL's own bomb check (in Image.open) must not just warn.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(f)
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            if isinstance(e, UnidentifiedImageError):
                empty = f.seek(0, io.SEEK_END) == 0
                what = "file is empty" if empty else "not a recognized image format"
                raise InputError(f"{where}: {what}; pass a JPEG/PNG/WebP/... image file") from None
            raise InputError(f"{where}: too many pixels, over the limit of {MAX_PIXELS:,} "
                             f"(possible decompression bomb; {_one_line(e)}); downscale it first") from None
        except Exception as e:  # broken headers make some PIL plugins raise odd errors
            raise InputError(f"{where}: not a valid image ({_one_line(e)}); "
                             "re-save or replace the file") from None
        with im:
            w, h = im.size
            # Header-only checks, before anything is decoded.
            if w * h > MAX_PIXELS:
                raise InputError(f"{where}: image is {w}x{h} px = {w * h:,} pixels, over the limit of "
                                 f"{MAX_PIXELS:,} (possible decompression bomb); downscale it first")
            try:
                im.load()  # first frame only; truncated data raises (LOAD_TRUNCATED_IMAGES stays off)
            except Exception as e:
                raise InputError(f"{where}: image data is truncated or corrupt ({_one_line(e)}); "
                                 "re-download or re-save the file") from None
            try:
                return _to_rgb(im)
            except Exception as e:
                raise InputError(f"{where}: cannot convert color mode {im.mode!r} to RGB "
                                 f"({_one_line(e)}); re-save the image as RGB") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """A loaded image of any mode as a new 8-bit RGB image, with the pixels of the original's
    `convert("RGB")`: alpha dropped, 16-bit and float values clipped at 255. Palette images go
    through RGBA, which gives the same pixels without PIL's warning about byte transparency."""
    if im.mode in ("P", "PA"):
        return im.convert("RGBA").convert("RGB")
    return im.convert("RGB")


def preprocess(images: Sequence[Image.Image], spec: ImageSpec) -> torch.Tensor:
    """RGB images -> float32 [B, 3, S, S], equal to transformers' SigLIP image processor output."""
    s = spec.size
    arrays = []
    for im in images:
        if im.mode != "RGB":
            raise ValueError(f"preprocess expects RGB images, got mode {im.mode!r}; use load_image")
        arrays.append(np.asarray(im.resize((s, s), resample=spec.resample), dtype=np.uint8))
    if not arrays:
        return torch.empty((0, 3, s, s), dtype=torch.float32)
    x = (np.stack(arrays).astype(np.float64) * spec.rescale).astype(np.float32)  # as transformers
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
