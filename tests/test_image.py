"""Tests for runtime.image: loading untrusted files and SigLIP preprocessing."""

import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import runtime.image as image_mod
import runtime.files as files_mod
from runtime.errors import InputError
from runtime.image import MAX_PIXELS, ImageSpec, load_image, preprocess


def _siglip_processor(size: int):
    try:
        import torchvision  # noqa: F401
        from transformers import SiglipImageProcessor as cls
    except ImportError:
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as cls
    return cls(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
               resample=3, rescale_factor=1 / 255, do_resize=True, do_rescale=True, do_normalize=True)


def _random_rgb(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth gradient + noise, so resampling is exercised on both
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    a = (base + rng.integers(-60, 60, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(a, "RGB")


def _save(tmp_path, name, im, **kw):
    p = tmp_path / name
    im.save(p, **kw)
    return p


def _assert_err(path, *words):
    with pytest.raises(InputError) as ei:
        load_image(path)
    msg = str(ei.value)
    assert "\n" not in msg and "\r" not in msg
    assert str(os.fspath(path)) in msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    return msg


# ---------------------------------------------------------------- preprocessing equality

@pytest.mark.parametrize("size", [384, 64])
def test_preprocess_matches_transformers(size):
    imgs = [_random_rgb(w, h, i) for i, (w, h) in
            enumerate([(640, 480), (384, 384), (100, 300), (1000, 37), (50, 50)])]
    spec = ImageSpec(size=size)
    ours = preprocess(imgs, spec)
    assert ours.dtype == torch.float32 and ours.shape == (len(imgs), 3, size, size)
    ref = _siglip_processor(size)(images=imgs, return_tensors="np")["pixel_values"]
    assert ref.shape == tuple(ours.shape)
    assert np.abs(ours.numpy() - ref).max() < 1e-5


def test_preprocess_from_loaded_file_matches_transformers(tmp_path):
    p = _save(tmp_path, "a.png", _random_rgb(200, 120, 7))
    im = load_image(p)
    ref = _siglip_processor(384)(images=[im], return_tensors="np")["pixel_values"]
    assert np.abs(preprocess([im], ImageSpec()).numpy() - ref).max() < 1e-5


def test_preprocess_empty_and_non_rgb():
    assert preprocess([], ImageSpec(size=64)).shape == (0, 3, 64, 64)
    with pytest.raises(ValueError):
        preprocess([Image.new("L", (64, 64))], ImageSpec())


# ---------------------------------------------------------------- ImageSpec

def test_spec_from_so400m_config_and_empty():
    so400m = {"do_normalize": True, "do_rescale": True, "do_resize": True,
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
              "image_processor_type": "SiglipImageProcessor", "processor_class": "SiglipProcessor",
              "resample": 3, "rescale_factor": 0.00392156862745098,
              "size": {"height": 384, "width": 384}}
    assert ImageSpec.from_processor_config(so400m) == ImageSpec()
    assert ImageSpec.from_processor_config({}) == ImageSpec()
    assert ImageSpec.from_processor_config({"size": 224}).size == 224
    assert ImageSpec.from_processor_config({"size": {"shortest_edge": 256}}).size == 256
    spec = ImageSpec.from_processor_config({"image_mean": [0.1, 0.2, 0.3], "image_std": 0.25})
    assert spec.mean == (0.1, 0.2, 0.3) and spec.std == (0.25, 0.25, 0.25)


def test_spec_non_square_raises():
    with pytest.raises(InputError, match="not square"):
        ImageSpec.from_processor_config({"size": {"height": 384, "width": 512}})
    with pytest.raises(InputError):
        ImageSpec.from_processor_config({"size": "big"})


# ---------------------------------------------------------------- bad inputs

def test_missing_file(tmp_path):
    _assert_err(tmp_path / "nope.png", "does not exist")


def test_directory(tmp_path):
    _assert_err(tmp_path, "directory")


def test_unreadable_chmod(tmp_path):
    p = _save(tmp_path, "a.png", _random_rgb(64, 64, 0))
    os.chmod(p, 0)
    try:
        if os.access(p, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions")
        _assert_err(p, "permission")
    finally:
        os.chmod(p, 0o644)


def test_unreadable_permission_error(tmp_path, monkeypatch):
    p = _save(tmp_path, "a.png", _random_rgb(64, 64, 0))

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(files_mod.os, "open", deny)
    _assert_err(p, "permission denied")

    def io_error(*a, **k):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(files_mod.os, "open", io_error)
    _assert_err(p, "cannot read")


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, this is text\nnot an image\n")
    _assert_err(p, "not a recognized image")
    e = tmp_path / "empty.jpg"
    e.write_bytes(b"")
    _assert_err(e, "empty")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(tmp_path, fmt):
    p = _save(tmp_path, "full." + fmt.lower(), _random_rgb(300, 200, 1), format=fmt)
    data = p.read_bytes()
    t = tmp_path / ("cut." + fmt.lower())
    t.write_bytes(data[: len(data) // 2])
    assert Image.open(t).size == (300, 200)  # header still fine
    _assert_err(t, "truncated or corrupt")


def test_corrupt_png_data(tmp_path):
    p = _save(tmp_path, "a.png", _random_rgb(300, 200, 2))
    data = bytearray(p.read_bytes())
    i = data.index(b"IDAT") + 40
    data[i:i + 64] = bytes(64)
    p.write_bytes(bytes(data))
    _assert_err(p, "corrupt")


@pytest.mark.parametrize("w,h", [(1, 1), (20, 500), (500, 32), (32, 32)])
def test_small_images_are_kept(tmp_path, w, h):
    """The original's inference processor scores images of any size."""
    im = load_image(_save(tmp_path, "small.png", Image.new("RGB", (w, h), (10, 200, 30))))
    assert im.size == (w, h) and im.getpixel((0, 0)) == (10, 200, 30)


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("w,h", [(100_000, 100_000), (10_000, 10_000)])
def test_decompression_bomb(tmp_path, w, h):
    # 100000^2 trips PIL's own DecompressionBombError; 10000^2 (1.1x limit) only its warning.
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(w, h))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_err(p, "decompression bomb", f"{MAX_PIXELS:,}")


def test_bomb_check_is_ours_before_decode(tmp_path, monkeypatch):
    # With PIL's limit disabled, our own header check must still refuse before decoding.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(100_000, 100_000))
    msg = _assert_err(p, "100000x100000", f"{MAX_PIXELS:,}")
    assert f"{100_000 * 100_000:,}" in msg


# ---------------------------------------------------------------- color modes

def _load_quiet(p) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        im = load_image(p)
    assert im.mode == "RGB" and im.size == (48, 40)
    return np.asarray(im)


GRAD = (np.arange(40 * 48).reshape(40, 48) % 256).astype(np.uint8)


@pytest.mark.parametrize("mode,fmt", [("RGB", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("L", "PNG"),
                                      ("1", "PNG"), ("CMYK", "TIFF"), ("CMYK", "JPEG"),
                                      ("YCbCr", "TIFF"), ("PA", "TIFF"), ("P", "PNG"), ("P", "GIF")])
def test_modes_load_as_rgb(tmp_path, mode, fmt):
    src = Image.fromarray(np.stack([GRAD, 255 - GRAD, np.full_like(GRAD, 90)], -1), "RGB")
    im = src.convert(mode) if mode not in ("P", "PA") else src.quantize(64)
    if mode == "PA":
        im = im.convert("PA")
    p = _save(tmp_path, "m." + fmt.lower(), im, format=fmt)
    a = _load_quiet(p)
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "P", "PA"):
        # colorful source survives: red channel follows GRAD, green its inverse
        assert np.corrcoef(a[..., 0].ravel(), GRAD.ravel())[0, 1] > 0.9
        assert np.corrcoef(a[..., 1].ravel(), GRAD.ravel())[0, 1] < -0.9
    else:
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
        assert (a[..., 0] == np.asarray(im.convert("L"))).all()  # gray values kept as stored
        assert a.min() < a.max()


def test_rgba_alpha_is_dropped(tmp_path):
    a = np.zeros((40, 48, 4), np.uint8)
    a[..., 0] = 200
    a[..., 3] = 0  # fully transparent: pixels kept as stored, not composited
    assert (_load_quiet(_save(tmp_path, "t.png", Image.fromarray(a, "RGBA")))[..., 0] == 200).all()


def test_palette_with_bytes_transparency_no_warning(tmp_path):
    im = Image.fromarray((np.arange(40 * 48).reshape(40, 48) % 4).astype(np.uint8), "P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    p = _save(tmp_path, "p.png", im, transparency=bytes([0, 128, 255, 10]))
    assert isinstance(Image.open(p).info["transparency"], bytes)
    a = _load_quiet(p)
    assert tuple(a[0, 1]) == (255, 0, 0) and tuple(a[0, 3]) == (0, 0, 255)
    g = _save(tmp_path, "p.gif", im, transparency=1)
    assert tuple(_load_quiet(g)[0, 2]) == (0, 255, 0)


def _gray16(values) -> np.ndarray:
    a = np.zeros((40, 48), np.uint32)
    for i, v in enumerate(values):
        a[:, i * 12:(i + 1) * 12] = v
    return a


@pytest.mark.parametrize("mode,fmt", [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF"),
                                      ("I;16L", "TIFF"), ("I", "TIFF"), ("F", "TIFF")])
def test_16bit_and_float_pixels_are_the_originals(tmp_path, mode, fmt):
    """The original opens and calls `convert("RGB")`, which clips values above 255."""
    a = _gray16([0, 200, 4096, 65535])
    if mode in ("I", "F"):
        im = Image.fromarray(a.astype(np.int32 if mode == "I" else np.float32), mode)
    else:
        im = Image.frombytes(mode, (48, 40), a.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    assert im.mode == mode
    p = _save(tmp_path, "g." + fmt.lower(), im, format=fmt)
    with Image.open(p) as original:
        reference = np.asarray(original.convert("RGB"))
    out = _load_quiet(p)
    assert np.array_equal(out, reference)
    assert [int(out[0, i * 12, 0]) for i in range(4)] == [0, 200, 255, 255]


def test_animated_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (48, 40), c) for c in [(255, 0, 0), (0, 0, 255)]]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(p).n_frames == 2
    assert tuple(_load_quiet(p)[5, 5]) == (255, 0, 0)


def test_returned_image_is_independent_of_file(tmp_path):
    p = _save(tmp_path, "a.png", _random_rgb(64, 48, 3))
    im = load_image(p)
    os.remove(p)
    assert np.asarray(im).shape == (48, 64, 3)


def test_bytes_load_like_files(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    assert np.array_equal(np.asarray(image_mod.load_image_bytes(data, "k1")), np.asarray(load_image(path)))
    with pytest.raises(InputError, match="k2: file is empty"):
        image_mod.load_image_bytes(b"", "k2")
    with pytest.raises(InputError, match="k3: image data is truncated"):
        image_mod.load_image_bytes(data[: len(data) // 2], "k3")
