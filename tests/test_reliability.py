"""Hostile inputs end in a one-line error, never a hang, a blow-up or a silently corrupt output:
FIFOs and devices, external interpreters, bomb-like images, bad pairs lines, resume edge cases,
two runs on one output. Every test is bounded by a deadline (SIGALRM), so a regression fails
instead of hanging the suite."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from runtime.errors import InputError
from runtime.image import FORMATS, load_image, load_image_bytes
from runtime.lock import output_lock
from runtime.data.jsonl import read_jsonl
from runtime.data.jsonl_output import done_lines
from runtime.score import main

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging) if the block takes longer than `seconds`."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def png(path: Path, size=(32, 32), color=(200, 30, 30)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


# ---------------------------------------------------------------- files that are not files

def test_fifo_image_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with deadline(5), pytest.raises(InputError, match="FIFO"):
        load_image(fifo)


@pytest.mark.parametrize("path,message", [("/dev/zero", "character device"), ("/dev/null", "character device"),
                                          ("/proc/self/status", "pseudo-file")])
def test_device_and_proc_paths_are_refused_for_what_they_are(path, message):
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist here")
    with deadline(5), pytest.raises(InputError, match=message) as e:
        load_image(path)
    assert "empty" not in str(e.value)


def test_batch_with_a_fifo_line_goes_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    png(tmp_path / "ok.png")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": i, "image": name, "caption": "a red square"}) + "\n"
                             for i, name in enumerate(["pipe.png", "ok.png"])))
    out = tmp_path / "out.jsonl"
    with deadline(60):
        assert main(["--model", "demo", "--input", str(pairs), "--output", str(out), "--quiet", "--max-new-tokens", "4"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2]
    assert "FIFO" in records[0]["error"] and records[1]["error"] is None


@pytest.mark.parametrize("which", ["--input", "--output"])
def test_fifo_pairs_or_output_file_is_a_one_line_error(tmp_path, capsys, which):
    png(tmp_path / "ok.png")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "image": "ok.png", "caption": "x"}) + "\n")
    paths = {"--input": pairs, "--output": tmp_path / "out.jsonl"}
    paths[which].unlink(missing_ok=True)
    os.mkfifo(paths[which])
    with deadline(30):
        rc = main(["--model", "demo", "--input", str(paths["--input"]), "--output", str(paths["--output"]), "--quiet"])
    assert rc == 1 and "FIFO" in one_line_error(capsys)


# ---------------------------------------------------------------- images

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n"
       b"newpath 0 0 moveto 16 0 lineto 16 16 lineto closepath fill\nshowpage\n%%EOF\n")


def test_eps_is_refused_before_any_external_interpreter(tmp_path):
    path = tmp_path / "drawing.eps"
    path.write_bytes(EPS)
    with Image.open(path) as im:  # Pillow itself takes it for EPS, which it renders with Ghostscript
        assert im.format == "EPS"
    assert "EPS" not in FORMATS
    with pytest.raises(InputError, match="external interpreter") as e:
        load_image(path)
    assert "corrupt" not in str(e.value)
    with pytest.raises(InputError, match="external interpreter"):
        load_image_bytes(EPS, "member.eps")


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is edited to declare width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_tiny_file_declaring_a_huge_image_is_refused_before_decoding(tmp_path):
    data = _jpeg_declaring(9000, 9000)
    assert len(data) < 1000
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (9000, 9000)
    path = tmp_path / "bomb.jpg"
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(InputError, match="expansion"):
        load_image(path)
    with pytest.raises(InputError, match="expansion"):
        load_image_bytes(data, "bomb.jpg")
    assert time.perf_counter() - start < 1.0


def test_large_flat_png_is_still_scored(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (5000, 5000), (200, 10, 10)).save(path)  # 75 MB of pixels, deflate at its best
    im = load_image(path)
    assert im.size == (5000, 5000) and im.mode == "RGB" and im.getpixel((4999, 4999)) == (200, 10, 10)


# ---------------------------------------------------------------- pairs lines

def test_every_line_gets_one_record_nesting_blank_and_surrogates_included(tmp_path):
    png(tmp_path / "ok.png")
    lone = '{"id": "a\\ud800", "image": "ok.png", "caption": "x"}'
    lines = [json.dumps({"id": "good", "image": "ok.png", "caption": "a red square"}),
             "[" * 2000 + "]" * 2000, "", "   ", lone, '{"id": 7, "image": "ok.png"',
             json.dumps({"id": "after", "image": "ok.png", "caption": "a red square"})]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(lines) + "\n")
    rows = list(read_jsonl(pairs))
    assert [r.line for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert "nested too deeply" in rows[1].error and "blank line" in rows[2].error and "blank line" in rows[3].error
    out = tmp_path / "out.jsonl"
    with deadline(60):
        assert main(["--model", "demo", "--input", str(pairs), "--output", str(out), "--quiet", "--max-new-tokens", "4"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["error"] is None for r in records] == [True, False, False, False, False, False, True]
    assert records[4]["id"] == json.loads(lone)["id"] and "surrogate" in records[4]["error"]
    assert done_lines(out) == set(range(1, 8))


def test_overlong_line_is_an_error_record_and_the_next_line_is_read(tmp_path):
    from runtime.data.jsonl import MAX_LINE_BYTES

    png(tmp_path / "ok.png")
    pairs = tmp_path / "pairs.jsonl"
    long_line = json.dumps({"id": "long", "image": "ok.png", "caption": "x" * (MAX_LINE_BYTES + 10)})
    pairs.write_text(long_line + "\n" + json.dumps({"id": "next", "image": "ok.png", "caption": "y"}) + "\n")
    rows = list(read_jsonl(pairs))
    assert [r.line for r in rows] == [1, 2]
    assert "longer than" in rows[0].error and rows[1].error is None and rows[1].id == "next"


def test_unexpected_failure_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    import runtime.score as score

    def broken(args):
        raise KeyError("something nobody foresaw")
    monkeypatch.setattr(score, "load_scorer", broken)
    assert main(["--image", str(png(tmp_path / "a.png")), "--caption", "x"]) == 1
    assert "unexpected KeyError" in one_line_error(capsys)
    with pytest.raises(KeyError):  # --debug keeps the traceback for a bug report
        main(["--image", str(tmp_path / "a.png"), "--caption", "x", "--debug"])


# ---------------------------------------------------------------- resume

RECORD = {"id": "a", "line": 1, "error": None}


@pytest.mark.parametrize("tail", [b"{", b'{"i', b'{"id": ', b'{"id": "b", "li'])
def test_partial_last_line_of_any_length_is_dropped(tmp_path, tail):
    out = tmp_path / "out.jsonl"
    out.write_bytes(json.dumps(RECORD).encode() + b"\n" + tail)
    assert done_lines(out) == {1}
    assert out.read_bytes() == json.dumps(RECORD).encode() + b"\n"


@pytest.mark.parametrize("line", ['{"line": 5}', '{"id": 1, "line": 1e999, "error": null}',
                                  '{"id": 1, "line": "5", "error": null}', '{"id": 1, "line": true, "error": null}',
                                  '[' * 3000 + ']' * 3000])
def test_foreign_lines_never_mark_a_pair_done(tmp_path, line):
    out = tmp_path / "out.jsonl"
    data = (json.dumps(RECORD) + "\n" + line + "\n").encode()
    out.write_bytes(data)
    with pytest.raises(InputError, match="not a record of this tool"):
        done_lines(out)
    assert out.read_bytes() == data  # refused untouched


def test_resume_with_a_foreign_line_is_a_one_line_error(tmp_path, capsys):
    png(tmp_path / "ok.png")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "image": "ok.png", "caption": "x"}) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 1, "line": 1e999, "error": null}\n')
    assert main(["--model", "demo", "--input", str(pairs), "--output", str(out), "--quiet"]) == 1
    assert "not a record of this tool" in one_line_error(capsys)


# ---------------------------------------------------------------- one output, one run

HOLD = """
import sys, time
from runtime.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_run_on_one_output_is_refused_naming_the_holder(tmp_path, capsys):
    png(tmp_path / "ok.png")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": 1, "image": "ok.png", "caption": "x"}) + "\n")
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["--model", "demo", "--input", str(pairs), "--output", str(out), "--quiet"]) == 1
        err = one_line_error(capsys)
        assert "another run is writing it" in err and f"pid {holder.pid} " in err and " on host " in err
        assert not out.exists()
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock however the holder ends
        holder.wait()
    assert main(["--model", "demo", "--input", str(pairs), "--output", str(out), "--quiet", "--max-new-tokens", "2"]) == 0
    assert [json.loads(line)["line"] for line in out.read_text().splitlines()] == [1]


def test_lock_is_exclusive_within_a_process_too(tmp_path):
    out = tmp_path / "o.jsonl"
    with output_lock(out):
        with pytest.raises(InputError, match=f"pid {os.getpid()} "):
            with output_lock(out):
                pass
    with output_lock(out):  # released
        pass


def test_two_concurrent_runs_leave_one_ordered_output(tmp_path):
    png(tmp_path / "ok.png")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": i, "image": "ok.png", "caption": f"caption {i}"}) + "\n"
                             for i in range(24)))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "runtime.score", "--model", "demo", "--input", str(pairs), "--output", str(out), "--quiet",
           "--max-new-tokens", "2", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.wait(timeout=120), r.stderr.read()) for r in runs]
    codes = sorted(code for code, _ in results)
    lines = [json.loads(line)["line"] for line in out.read_text().splitlines()]
    if codes == [0, 1]:  # they overlapped: one refused, with one line
        refused = next(err for code, err in results if code == 1)
        errors = [line for line in refused.splitlines() if line.startswith("error:")]  # not library warnings
        assert len(errors) == 1 and "another run is writing it" in errors[0] and "Traceback" not in refused
    else:  # the second started after the first ended: it resumed and added nothing
        assert codes == [0, 0]
    assert lines == list(range(1, 25))
