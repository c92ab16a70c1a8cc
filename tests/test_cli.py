"""Tests for the command line `python -m runtime.score`: single pair, batch, resume, bad input.

The fixture model has random weights, so verdicts are gibberish: these tests check the CLI's
contracts (exit codes, one-line errors, one record per input line, resume), not the scores.
Almost everything calls `main(argv)` in-process; one test runs the real module entry point.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.image import MAX_PIXELS
from runtime.score import main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--device", "cpu", "--dtype", "fp32", "--quiet", "--max-new-tokens", "8"]
VERDICT_KEYS = {"id", "model", "overall_score", "recaption", "sub_scores", "raw_text",
                "caption_truncated", "parse_error", "error", "timings"}
# ~3000 words: far more tokens than the fixture's 512 positions (16 of them for the image).
LONG_CAPTION = " ".join(f"word{i % 50} in a long caption" for i in range(600))


# ---------------------------------------------------------------- helpers

def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    """main(argv) -> (exit code, stdout, stderr); argparse's SystemExit becomes its code."""
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def model_args(ckpt: Path) -> list[str]:
    return ["--model", str(ckpt), *FAST]


def assert_one_line_error(rc: int, out: str, err: str, *words: str) -> str:
    assert rc != 0
    assert out == ""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    return lines[0]


def png_header_only(w: int, h: int) -> bytes:
    """A valid-looking PNG whose IHDR claims w x h, with a tiny body (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def read_records(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode("utf-8").split("\n")[:-1]]


def write_pairs(path: Path, lines: list[bytes | str | dict]) -> Path:
    """Write a pairs file; dicts become JSON lines, str/bytes are written as is (plus a newline)."""
    out = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        if isinstance(line, str):
            line = line.encode("utf-8")
        out += line + b"\n"
    path.write_bytes(out)
    return path


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory) -> dict[str, Path]:
    """One file per kind of bad image, with the words its error must mention."""
    d = tmp_path_factory.mktemp("bad_images")
    (d / "folder.png").mkdir()
    (d / "text.png").write_text("this is not an image\n")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / "full.png")
    full = (d / "full.png").read_bytes()
    (d / "corrupt.png").write_bytes(full[: len(full) // 2])
    (d / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    return {"missing": d / "missing.png", "folder": d / "folder.png", "text": d / "text.png",
            "corrupt": d / "corrupt.png", "bomb": d / "bomb.png"}


BAD_IMAGE_WORDS = {
    "missing": ["does not exist"],
    "folder": ["is a directory"],
    "text": ["not a recognized image format"],
    "corrupt": ["truncated or corrupt"],
    "bomb": ["decompression bomb", f"{MAX_PIXELS:,}"],
}


# ---------------------------------------------------------------- 1. single pair

@pytest.mark.parametrize("output_all", [False, True])
def test_single_pair_prints_one_verdict(capsys, tiny_ckpt, image_dir, output_all):
    argv = [*model_args(tiny_ckpt), "--image", str(image_dir / "img1.png"), "--caption", "a dog on a beach"]
    rc, out, err = run_main(capsys, argv + (["--output-all"] if output_all else []))
    assert rc == 0, err
    lines = out.strip("\n").split("\n")
    assert len(lines) == 1
    v = json.loads(lines[0])
    assert VERDICT_KEYS <= set(v)
    assert v["error"] is None
    assert v["id"] is None
    assert v["model"] == Path(tiny_ckpt).name
    assert isinstance(v["raw_text"], str)
    assert v["caption_truncated"] is False
    assert isinstance(v["sub_scores"], dict)
    assert v["overall_score"] is None or isinstance(v["overall_score"], int)
    assert v["parse_error"] is None or isinstance(v["parse_error"], str)
    assert v["timings"]["batch_size"] == 1
    assert 1 <= v["timings"]["new_tokens"] <= 8


# ---------------------------------------------------------------- 2. single pair, bad input

@pytest.mark.parametrize("kind", list(BAD_IMAGE_WORDS))
def test_single_bad_image(capsys, tiny_ckpt, bad_images, kind):
    path = bad_images[kind]
    rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--image", str(path), "--caption", "a dog"])
    assert rc == 1
    assert_one_line_error(rc, out, err, str(path), *BAD_IMAGE_WORDS[kind])


@pytest.mark.parametrize("caption", ["", "   \t\n  "])
def test_single_empty_caption_is_scored(capsys, tiny_ckpt, image_dir, caption):
    """Empty and blank captions are the pairs that most need a recaption; the original scores them."""
    rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--image", str(image_dir / "img0.png"),
                                     "--caption", caption])
    assert rc == 0, err
    assert json.loads(out)["error"] is None


def test_single_small_image_is_scored(capsys, tiny_ckpt, tmp_path):
    """The original's inference processor keeps images of 32 px or less."""
    for w, h in ((1, 1), (20, 200), (32, 32)):
        Image.new("RGB", (w, h), "red").save(tmp_path / f"{w}x{h}.png")
        rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--image", str(tmp_path / f"{w}x{h}.png"),
                                         "--caption", "a red square"])
        assert rc == 0, err
        assert json.loads(out)["error"] is None


def test_missing_demo_model_is_a_clear_error(capsys, image_dir, tmp_path, monkeypatch):
    import runtime.score

    monkeypatch.setattr(runtime.score, "DEMO_MODEL", tmp_path / "gone")
    rc, out, err = run_main(capsys, ["--image", str(image_dir / "img0.png"), "--caption", "x", *FAST])
    assert rc == 1
    assert_one_line_error(rc, out, err, "demo model is missing", "--model")


def test_model_folder_missing(capsys, tmp_path, image_dir):
    missing = tmp_path / "no-such-model"
    rc, out, err = run_main(capsys, ["--model", str(missing), "--image", str(image_dir / "img0.png"),
                                     "--caption", "x", *FAST])
    assert rc == 1
    assert_one_line_error(rc, out, err, str(missing), "not a folder")


def test_model_folder_without_config(capsys, tmp_path, image_dir):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    rc, out, err = run_main(capsys, ["--model", str(empty), "--image", str(image_dir / "img0.png"),
                                     "--caption", "x", *FAST])
    assert rc == 1
    assert_one_line_error(rc, out, err, "config.json")


@pytest.mark.parametrize("argv", [
    ["--image", "a.png"],                                  # no --caption
    ["--caption", "x"],                                    # no --image
    ["--input", "p.jsonl"],                                # no --output
    ["--output", "o.jsonl"],                               # no --input
    ["--image", "a.png", "--caption", "x", "--input", "p.jsonl", "--output", "o.jsonl"],  # both modes
    [],                                                    # neither mode
    ["--image", "a.png", "--caption", "x", "--max-new-tokens", "0"],
    ["--input", "p.jsonl", "--output", "o.jsonl", "--batch-size", "0"],
    ["--image", "a.png", "--caption", "x", "--device", "tpu"],
    ["--image", "a.png", "--caption", "x", "--no-such-flag"],
])
def test_argparse_misuse_exits_2(capsys, argv):
    rc, out, err = run_main(capsys, argv)
    assert rc == 2
    assert out == ""
    assert "usage:" in err and "error:" in err


def test_missing_pairs_file(capsys, tiny_ckpt, tmp_path):
    rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--input", str(tmp_path / "nope.jsonl"),
                                     "--output", str(tmp_path / "o.jsonl")])
    assert rc == 1
    assert_one_line_error(rc, out, err, "--input", "no such file")
    assert not (tmp_path / "o.jsonl").exists()


def test_module_entry_point_bad_image(tmp_path, tiny_ckpt, bad_images):
    """The one real subprocess: `python -m runtime.score` exits 1 with a one-line `error:` on stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.score", *model_args(tiny_ckpt),
         "--image", str(bad_images["text"]), "--caption", "a dog"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr,
                          str(bad_images["text"]), "not a recognized image format")


# ---------------------------------------------------------------- 3. caption longer than the context

def test_long_caption_single_is_truncated(capsys, tiny_ckpt, image_dir):
    rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--image", str(image_dir / "img0.png"),
                                     "--caption", LONG_CAPTION])
    assert rc == 0, err
    v = json.loads(out)
    assert v["error"] is None
    assert v["caption_truncated"] is True
    assert isinstance(v["raw_text"], str)


def test_long_caption_batch_is_truncated(capsys, tiny_ckpt, image_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", [
        {"id": "long", "image": str(image_dir / "img0.png"), "caption": LONG_CAPTION},
        {"id": "short", "image": str(image_dir / "img1.png"), "caption": "a dog"},
    ])
    out_path = tmp_path / "out.jsonl"
    rc, _, err = run_main(capsys, [*model_args(tiny_ckpt), "--input", str(pairs), "--output", str(out_path)])
    assert rc == 0, err
    recs = read_records(out_path)
    assert [r["id"] for r in recs] == ["long", "short"]
    assert [r["error"] for r in recs] == [None, None]
    assert [r["caption_truncated"] for r in recs] == [True, False]


# ---------------------------------------------------------------- 4. color modes

def test_color_modes_are_scored(capsys, tiny_ckpt, tmp_path):
    rng = np.random.default_rng(2)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 72, 3), dtype=np.uint8))
    files = {}
    files["cmyk.jpg"] = rgb.convert("CMYK")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    files["palette.png"] = pal
    files["rgba.png"] = rgb.convert("RGBA")
    files["la.png"] = rgb.convert("LA")
    files["gray.png"] = rgb.convert("L")
    files["i16.png"] = Image.fromarray(rng.integers(0, 65536, (48, 72), dtype=np.uint16))
    expected_modes = {"cmyk.jpg": "CMYK", "palette.png": "P", "rgba.png": "RGBA", "la.png": "LA",
                      "gray.png": "L", "i16.png": "I;16"}
    for name, im in files.items():
        if name == "palette.png":
            im.save(tmp_path / name, transparency=0)
        else:
            im.save(tmp_path / name)
        with Image.open(tmp_path / name) as check:
            assert check.mode == expected_modes[name], (name, check.mode)
    pairs = write_pairs(tmp_path / "pairs.jsonl",
                        [{"id": name, "image": name, "caption": "a picture"} for name in files])
    out_path = tmp_path / "out.jsonl"
    rc, _, err = run_main(capsys, [*model_args(tiny_ckpt), "--batch-size", "3",
                                   "--input", str(pairs), "--output", str(out_path)])
    assert rc == 0, err
    recs = read_records(out_path)
    assert [r["id"] for r in recs] == list(files)
    for r in recs:
        assert r["error"] is None, r
        assert isinstance(r["raw_text"], str)


# ---------------------------------------------------------------- 5. batch with every bad case

def test_batch_mixed_good_and_bad(capsys, tiny_ckpt, image_dir, bad_images, tmp_path, monkeypatch):
    # The pairs file lives in its own folder with its images; relative paths are resolved
    # relative to it, not to the working directory (which is elsewhere).
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    for i in range(3):
        (data / "imgs" / f"img{i}.png").write_bytes((image_dir / f"img{i}.png").read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    good = "imgs/img0.png"
    # (line content, expected id, words the error must mention, or None for a good pair)
    cases = [
        ({"id": "g1", "image": good, "caption": "a dog"}, "g1", None),
        ({"id": "missing", "image": str(bad_images["missing"]), "caption": "c"}, "missing", ["does not exist"]),
        (b"", None, ["blank line"]),
        ({"id": "text", "image": str(bad_images["text"]), "caption": "c"}, "text", ["not a recognized image"]),
        ({"id": "corrupt", "image": str(bad_images["corrupt"]), "caption": "c"}, "corrupt", ["truncated or corrupt"]),
        ({"id": "g2", "image": "imgs/img1.png", "caption": "a cat"}, "g2", None),
        ({"id": "bomb", "image": str(bad_images["bomb"]), "caption": "c"}, "bomb", ["decompression bomb"]),
        ({"id": "folder", "image": str(bad_images["folder"]), "caption": "c"}, "folder", ["directory"]),
        ({"id": "empty", "image": good, "caption": ""}, "empty", None),
        ({"id": "blankcap", "image": good, "caption": "  \t "}, "blankcap", None),
        (b'{"id": "bytes", "image": "imgs/img0.png", "caption": "caf\xe9 \xff"}', None, ["UTF-8"]),
        (b"this is not json", None, ["not a JSON object"]),
        (b'["g9", "imgs/img0.png", "c"]', None, ["not a JSON object"]),
        ({"id": "nocap", "image": good}, "nocap", ["missing field", "caption"]),
        ({"id": "noimg", "caption": "c"}, "noimg", ["missing field", "image"]),
        ({"image": good, "caption": "c"}, None, ["missing field", "id"]),
        ({"id": "numcap", "image": good, "caption": 123}, "numcap", ["must be strings"]),
        ({"id": "g1", "image": "imgs/img2.png", "caption": "again"}, "g1", ["duplicate", "line 1"]),
        (b"   \t ", None, ["blank line"]),
        ({"id": 7, "image": str(data / "imgs" / "img2.png"), "caption": "absolute path"}, 7, None),
        ({"id": "g3", "image": "imgs/img2.png", "caption": "a bird"}, "g3", None),
    ]
    pairs = write_pairs(data / "pairs.jsonl", [c[0] for c in cases])
    out_path = tmp_path / "out" / "verdicts.jsonl"
    rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--batch-size", "3",
                                     "--input", str(pairs), "--output", str(out_path)])
    assert rc == 0, err
    assert out == ""
    expected = list(enumerate(cases, start=1))  # every line, blank ones included, gets one record
    recs = read_records(out_path)
    assert len(recs) == len(expected)
    assert [r["line"] for r in recs] == [n for n, _ in expected]
    for rec, (n, (_, want_id, words)) in zip(recs, expected):
        assert rec["id"] == want_id, (n, rec)
        if words is None:
            assert rec["error"] is None, (n, rec)
            assert isinstance(rec["raw_text"], str), (n, rec)
            assert rec["model"] == Path(tiny_ckpt).name
        else:
            assert isinstance(rec["error"], str), (n, rec)
            assert "\n" not in rec["error"] and "\r" not in rec["error"]
            for w in words:
                assert w.lower() in rec["error"].lower(), (n, w, rec["error"])
    n_bad = sum(c[2] is not None for c in cases)
    assert f"({n_bad} with errors, 0 already done)" in err


# ---------------------------------------------------------------- 6. resume

def _resume_pairs(tmp_path: Path, image_dir: Path) -> Path:
    lines = [{"id": f"p{i}", "image": str(image_dir / f"img{i % 3}.png"), "caption": f"caption number {i}"}
             for i in range(6)]
    lines.insert(3, {"id": "p0", "image": str(image_dir / "img0.png"), "caption": "dup"})  # an error line
    return write_pairs(tmp_path / "pairs.jsonl", lines)


def test_resume_after_kill(capsys, tiny_ckpt, image_dir, tmp_path):
    pairs = _resume_pairs(tmp_path, image_dir)
    out_path = tmp_path / "out.jsonl"
    argv = [*model_args(tiny_ckpt), "--batch-size", "2", "--input", str(pairs), "--output", str(out_path)]
    rc, _, err = run_main(capsys, argv)
    assert rc == 0, err
    first = out_path.read_bytes()
    lines = first.split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == 7

    # A killed run: two complete records, then half of the third, no trailing newline.
    killed = lines[0] + b"\n" + lines[1] + b"\n" + lines[2][: len(lines[2]) // 2]
    out_path.write_bytes(killed)
    rc, _, err = run_main(capsys, argv)
    assert rc == 0, err
    assert "2 already done" in err
    final = out_path.read_bytes()
    assert final.startswith(lines[0] + b"\n" + lines[1] + b"\n")
    recs = read_records(out_path)
    assert sorted(r["line"] for r in recs) == list(range(1, 8))
    assert [r["id"] for r in recs] == ["p0", "p1", "p2", "p0", "p3", "p4", "p5"]
    assert "duplicate" in recs[3]["error"]
    assert all(r["error"] is None for i, r in enumerate(recs) if i != 3)

    # A rerun on a complete output scores nothing and leaves the file as it is.
    rc, _, err = run_main(capsys, argv)
    assert rc == 0, err
    assert "0 pairs scored" in err and "7 already done" in err
    assert out_path.read_bytes() == final


@pytest.mark.parametrize("content", [
    b"my own notes\nsecond line\n",
    b'{"id": 1, "verdict": "no line number"}\n',
    b'[1, 2, 3]\n',
    b'{"line": "three"}\n',
])
def test_output_not_our_records(capsys, tiny_ckpt, image_dir, tmp_path, content):
    pairs = _resume_pairs(tmp_path, image_dir)
    out_path = tmp_path / "notes.txt"
    out_path.write_bytes(content)
    rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--input", str(pairs), "--output", str(out_path)])
    assert rc == 1
    assert_one_line_error(rc, out, err, str(out_path), "not a record of this tool", "new --output")
    assert out_path.read_bytes() == content


@pytest.mark.parametrize("content", [b"my own notes\nlast line without newline", b"my own notes"])
def test_output_not_our_records_without_final_newline_is_left_untouched(
        capsys, tiny_ckpt, image_dir, tmp_path, content):
    pairs = _resume_pairs(tmp_path, image_dir)
    out_path = tmp_path / "notes.txt"
    out_path.write_bytes(content)
    rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--input", str(pairs), "--output", str(out_path)])
    assert out_path.read_bytes() == content
    assert rc == 1
    assert_one_line_error(rc, out, err, str(out_path), "not a record of this tool")


def test_output_is_a_directory(capsys, tiny_ckpt, image_dir, tmp_path):
    pairs = _resume_pairs(tmp_path, image_dir)
    folder = tmp_path / "outdir"
    folder.mkdir()
    rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--input", str(pairs), "--output", str(folder)])
    assert rc == 1
    assert_one_line_error(rc, out, err, str(folder))


# ---------------------------------------------------------------- 7. batch == single

def test_batch_equals_single(capsys, tiny_ckpt, image_dir, tmp_path):
    captions = ["a dog", "A man stands in front of a checklist of customer service questions.",
                "x " * 40]
    cases = [(f"img{i}.png", captions[(i + 1) % 3]) for i in range(3)] + [("img2.png", captions[2])]
    pairs = write_pairs(tmp_path / "pairs.jsonl",
                        [{"id": n, "image": str(image_dir / img), "caption": cap}
                         for n, (img, cap) in enumerate(cases)])
    out_path = tmp_path / "out.jsonl"
    rc, _, err = run_main(capsys, [*model_args(tiny_ckpt), "--batch-size", "4",
                                   "--input", str(pairs), "--output", str(out_path)])
    assert rc == 0, err
    recs = read_records(out_path)
    assert all(r["timings"]["batch_size"] == 4 for r in recs)
    for rec, (img, cap) in zip(recs, cases):
        rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--image", str(image_dir / img),
                                         "--caption", cap])
        assert rc == 0, err
        single = json.loads(out)
        assert single["raw_text"] == rec["raw_text"]
        for key in ("overall_score", "recaption", "sub_scores", "parse_error", "caption_truncated"):
            assert single[key] == rec[key], key


# ---------------------------------------------------------------- bugs: invalid Unicode in input

def test_batch_id_with_lone_surrogate(capsys, tiny_ckpt, image_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", [
        '{"id": "bad\\ud800", "image": "%s", "caption": "c"}' % (image_dir / "img0.png"),
        {"id": "good", "image": str(image_dir / "img1.png"), "caption": "c"},
    ])
    out_path = tmp_path / "out.jsonl"
    rc, _, err = run_main(capsys, [*model_args(tiny_ckpt), "--input", str(pairs), "--output", str(out_path)])
    assert rc == 0, err
    recs = read_records(out_path)
    assert [r["line"] for r in recs] == [1, 2]
    assert isinstance(recs[0]["error"], str)
    assert recs[1]["error"] is None


def test_batch_caption_with_lone_surrogate(capsys, tiny_ckpt, image_dir, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", [
        '{"id": "bad", "image": "%s", "caption": "caf\\udcff"}' % (image_dir / "img0.png"),
        {"id": "good", "image": str(image_dir / "img1.png"), "caption": "c"},
    ])
    out_path = tmp_path / "out.jsonl"
    rc, _, err = run_main(capsys, [*model_args(tiny_ckpt), "--input", str(pairs), "--output", str(out_path)])
    assert rc == 0, err
    recs = read_records(out_path)
    assert isinstance(recs[0]["error"], str) and "\n" not in recs[0]["error"]
    assert recs[1]["error"] is None


def test_single_caption_with_lone_surrogate(capsys, tiny_ckpt, image_dir):
    rc, out, err = run_main(capsys, [*model_args(tiny_ckpt), "--image", str(image_dir / "img0.png"),
                                     "--caption", "caf\udcff"])
    assert_one_line_error(rc, out, err, "caption")


@pytest.mark.parametrize("image", ["img\\u0000.png", "\\ud800.png"])
def test_batch_image_path_unencodable(capsys, tiny_ckpt, image_dir, tmp_path, image):
    pairs = write_pairs(tmp_path / "pairs.jsonl", [
        '{"id": "bad", "image": "%s", "caption": "c"}' % image,
        {"id": "good", "image": str(image_dir / "img1.png"), "caption": "c"},
    ])
    out_path = tmp_path / "out.jsonl"
    rc, _, err = run_main(capsys, [*model_args(tiny_ckpt), "--input", str(pairs), "--output", str(out_path)])
    assert rc == 0, err
    recs = read_records(out_path)
    assert isinstance(recs[0]["error"], str)
    assert recs[1]["error"] is None


def test_workers_default_to_two_on_cuda_none_on_cpu(tiny_scorer, monkeypatch):
    """`--workers` left out: the scorer decides by its device (CUDA_WORKERS on CUDA, 0 on CPU)."""
    import dataclasses

    import runtime.scorer
    from runtime.score import parse_args

    assert parse_args(["--input", "pairs.jsonl", "--output", "out.jsonl"]).workers is None
    seen = []
    monkeypatch.setattr(runtime.scorer, "prepared", lambda *a, **k: seen.append(a[3]) or iter(()))
    for device in ("cpu", "cuda"):
        assert list(dataclasses.replace(tiny_scorer, device=device, decoder=tiny_scorer.decoder).score_stream(
            [], workers=None)) == []
    assert list(tiny_scorer.score_stream([], workers=1)) == []
    assert seen == [0, runtime.scorer.CUDA_WORKERS, 1]
