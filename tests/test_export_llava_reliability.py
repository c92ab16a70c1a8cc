"""`python -m quantize.export` under hostile outputs: --force replaces only what an export wrote (the
files its `aitqe_export.json` lists), never follows a symbolic link, and every failure is one `error:`
line, never a traceback."""

from __future__ import annotations

import json
import shutil

import pytest

from quantize.export import main
from tests.test_golden import GOLDEN

SRC = GOLDEN / "checkpoint"


def export(out, *more) -> int:
    return main(["--model", str(SRC), "--output", str(out), *more])


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_an_export_lists_the_files_it_wrote_and_force_replaces_them(tmp_path):
    assert export(tmp_path / "out") == 0
    listed = json.loads((tmp_path / "out" / "aitqe_export.json").read_text())["files"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == listed
    assert export(tmp_path / "out", "--force") == 0


def test_force_refuses_a_folder_holding_files_the_export_did_not_write(tmp_path, capsys):
    assert export(tmp_path / "out") == 0
    (tmp_path / "out" / "my_notes.txt").write_text("mine")
    assert export(tmp_path / "out", "--force") == 1
    assert "my_notes.txt" in one_error(capsys)
    assert (tmp_path / "out" / "my_notes.txt").read_text() == "mine"


def test_force_refuses_a_folder_whose_manifest_lists_no_files(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "aitqe_export.json").write_text("{}")
    (tmp_path / "out" / "data.bin").write_bytes(b"user data")
    assert export(tmp_path / "out", "--force") == 1
    one_error(capsys)
    assert (tmp_path / "out" / "data.bin").exists()


def test_a_file_as_output_with_force_is_one_error_line(tmp_path, capsys):
    (tmp_path / "out").write_text("a file")
    assert export(tmp_path / "out", "--force") == 1
    one_error(capsys)
    assert (tmp_path / "out").read_text() == "a file"
    assert export(tmp_path / "out" / "below", "--force") == 1
    one_error(capsys)


def test_a_symlink_to_an_old_export_is_not_followed(tmp_path, capsys):
    assert export(tmp_path / "old") == 0
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    (tmp_path / "link").symlink_to(tmp_path / "old")
    assert export(tmp_path / "link", "--force") == 1
    assert "symbolic link" in one_error(capsys)
    assert (tmp_path / "link").is_symlink() and sorted(p.name for p in (tmp_path / "old").iterdir()) == before


def test_a_dangling_symlink_is_one_error_line(tmp_path, capsys):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert export(tmp_path / "link", "--force") == 1
    assert "symbolic link" in one_error(capsys)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("auto_map", [{"AutoConfig": "configuration_x.XConfig"}, "not a mapping", ["x"]])
def test_a_config_with_auto_map_is_exported_or_refused_in_one_line(tmp_path, capsys, auto_map):
    src = tmp_path / "ckpt"
    shutil.copytree(SRC, src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "auto_map": auto_map}))
    capsys.readouterr()
    rc = main(["--model", str(src), "--output", str(tmp_path / "out")])
    if rc:
        one_error(capsys)
    else:
        assert "auto_map" not in (tmp_path / "out" / "config.json").read_text()


def test_anything_unforeseen_is_one_error_line(tmp_path, capsys, monkeypatch):
    def broken(src, out):
        raise KeyError("weights")

    monkeypatch.setattr("quantize.llava_export.export_checkpoint", broken)
    assert export(tmp_path / "out") == 1
    assert "KeyError" in one_error(capsys)
    assert not (tmp_path / "out").exists()
