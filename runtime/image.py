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
from runtime.files import open_regular, show

MAX_IMAGE_SIDE = 2048  # the vision tower's square input side (SigLIP: 224-512)
MAX_PIXELS = 89_478_485  # decompression-bomb limit (PIL's default warning threshold)
# Declared size vs file size: an image whose RGB pixels would take over LARGE_IMAGE_BYTES must not
# expand more than MAX_EXPANSION times its file (deflate, PNG's codec, tops out at 1032x; real photos
# expand 3-30x). A 9000x9000 image thus needs >= 119 KB; a 693-byte file declaring it is refused.
LARGE_IMAGE_BYTES = 64 << 20
MAX_EXPANSION = 2048
# Formats Pillow decodes in-process. Left out: EPS (rendered by Ghostscript, an external program)
# and the stubs (BUFR, GRIB, HDF5, WMF) that hand the file to whatever handler is registered.
Image.init()
FORMATS = tuple(sorted(set(Image.OPEN) - {"EPS", "BUFR", "GRIB", "HDF5", "WMF"}))
POSTSCRIPT_MAGIC = (b"%!PS", b"\xc5\xd0\xd3\xc6")  # PostScript text, DOS EPS binary header


@dataclass(frozen=True)
class ImageSpec:
    """How the vision tower wants pixels (defaults: SigLIP so400m-patch14-384)."""

    size: int = 384  # square side
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = 3  # PIL BICUBIC
    rescale: float = 1 / 255

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 1 <= self.size <= MAX_IMAGE_SIDE:
            raise InputError(f"image size {self.size!r} is out of range (an integer 1..{MAX_IMAGE_SIDE}); "
                             "fix the model's image size")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 3 and all(isinstance(x, (int, float)) and
                                                                 not isinstance(x, bool) for x in v)):
                raise InputError(f"image {name} {v!r} must be 3 numbers; fix the model's image spec")
        if 0 in self.std:
            raise InputError(f"image std {self.std!r} holds a 0; fix the model's image spec")
        if self.resample not in (0, 1, 2, 3, 4, 5) or isinstance(self.resample, bool):
            raise InputError(f"image resample {self.resample!r} is not a PIL filter (0..5); fix the model's image spec")
        if isinstance(self.rescale, bool) or not isinstance(self.rescale, (int, float)):
            raise InputError(f"image rescale {self.rescale!r} is not a number; fix the model's image spec")

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
    return show(path)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an (untrusted) image file; return a fully loaded RGB image or raise InputError.

    Only regular files are opened (a FIFO or device is refused, never waited on). Only the first
    frame of animated images is used. EXIF orientation is NOT applied: pixels are kept as stored,
    like the original AITQE code (which does not call exif_transpose). Small images are kept, as
    the original's inference processor keeps them.
    """
    p = os.fspath(path)
    where = f"image {_show(p)}"
    with open_regular(p, where) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise InputError(f"{where}: file is empty; pass a JPEG/PNG/WebP/... image file")
        return _decode(f, where, size)


def load_image_bytes(data: bytes, name: str) -> Image.Image:
    """Like `load_image`, for an image held in memory (a shard member or a Parquet cell); `name`
    says where it came from in errors."""
    if not data:
        raise InputError(f"image {_show(name)}: file is empty; pass a JPEG/PNG/WebP/... image")
    return _decode(io.BytesIO(data), f"image {_show(name)}", len(data))


def _unidentified(f: BinaryIO, where: str) -> InputError:
    f.seek(0)
    head = f.read(4)
    if head.startswith(POSTSCRIPT_MAGIC):
        return InputError(f"{where}: PostScript/EPS, which only an external interpreter (Ghostscript) can render "
                          "and is not opened here; convert it to PNG or JPEG first")
    return InputError(f"{where}: not a recognized image format; pass a JPEG/PNG/WebP/... image file")


def _decode(f: BinaryIO, where: str, file_bytes: int) -> Image.Image:
    """An open binary file of an untrusted image -> a fully loaded RGB image, or InputError.

    Only formats that Pillow decodes in-process are tried (`FORMATS`); the declared size is checked
    against the pixel limit and against the file's size before any pixel is decoded."""
    with warnings.catch_warnings():
        # PIL's own bomb check (in Image.open) must not just warn.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(f, formats=FORMATS)
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            if isinstance(e, UnidentifiedImageError):
                raise _unidentified(f, where) from None
            raise InputError(f"{where}: too many pixels, over the limit of {MAX_PIXELS:,} "
                             f"(possible decompression bomb; {_one_line(e)}); downscale it first") from None
        except Exception as e:  # broken headers make some PIL plugins raise odd errors
            raise InputError(f"{where}: not a valid image ({_one_line(e)}); "
                             "re-save or replace the file") from None
        try:
            w, h = im.size
            # Header-only checks, before anything is decoded.
            if w * h > MAX_PIXELS:
                raise InputError(f"{where}: image is {w}x{h} px = {w * h:,} pixels, over the limit of "
                                 f"{MAX_PIXELS:,} (possible decompression bomb); downscale it first")
            if 3 * w * h > LARGE_IMAGE_BYTES and 3 * w * h > MAX_EXPANSION * file_bytes:
                raise InputError(f"{where}: declares {w}x{h} px in only {file_bytes:,} bytes, more than "
                                 f"{MAX_EXPANSION}x expansion (a truncated file or a decompression bomb); "
                                 "re-save or downscale it")
            try:
                im.load()  # first frame only; truncated data raises (LOAD_TRUNCATED_IMAGES stays off)
            except Exception as e:
                raise InputError(f"{where}: image data is truncated or corrupt ({_one_line(e)}); "
                                 "re-download or re-save the file") from None
            try:
                rgb = _to_rgb(im)
            except Exception as e:
                raise InputError(f"{where}: cannot convert color mode {im.mode!r} to RGB "
                                 f"({_one_line(e)}); re-save the image as RGB") from None
        except BaseException:
            im.close()
            raise
        if rgb is not im:
            im.close()
        return rgb


def _to_rgb(im: Image.Image) -> Image.Image:
    """A loaded image of any mode as an 8-bit RGB image, with the pixels of the original's
    `convert("RGB")`: alpha dropped, 16-bit and float values clipped at 255. Palette images go
    through RGBA, which gives the same pixels without PIL's warning about byte transparency.
    An RGB image is returned as is (no copy: a 9400x9400 copy is 265 MB)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("P", "PA"):
        return im.convert("RGBA").convert("RGB")
    return im.convert("RGB")


def resized(im: Image.Image, spec: ImageSpec) -> np.ndarray:
    """An RGB image squashed to the tower's S x S (no letterbox), uint8 [S, S, 3]: the pixels before
    rescaling and normalization (what an engine with its own normalization, clip.cpp, is handed)."""
    if im.mode != "RGB":
        raise ValueError(f"preprocess expects RGB images, got mode {im.mode!r}; use load_image")
    return np.asarray(im.resize((spec.size, spec.size), resample=spec.resample), dtype=np.uint8)


def preprocess(images: Sequence[Image.Image], spec: ImageSpec) -> torch.Tensor:
    """RGB images -> float32 [B, 3, S, S], equal to transformers' SigLIP image processor output."""
    s = spec.size
    arrays = [resized(im, spec) for im in images]
    if not arrays:
        return torch.empty((0, 3, s, s), dtype=torch.float32)
    x = (np.stack(arrays).astype(np.float64) * spec.rescale).astype(np.float32)  # as transformers
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
