"""Datasets under hostile input: every key exactly one record, nothing marked done that is not,
failures found before scoring and no wider than they are, the lock never following a link, enhanced
copies that extract inside their folder. Each test reproduces one finding of issue 26."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runtime.data.parquet_table import read_shard as read_parquet
from runtime.data.records import Shard, find_shards, is_shard_input
from runtime.data.webdataset_tar import read_shard as read_tar
from runtime.demo.shards import pairs, write_parquet, write_webdataset
from runtime.errors import InputError
from runtime.lock import output_lock
from tests.data_shards import run



def tar_of(path: Path, members: list[tuple[str, bytes | None, bytes]]) -> Path:
    """A tar of (name, data or None, type): a None data writes a member of that type (a link, a device)."""
    with tarfile.open(path, "w") as tf:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = kind, "elsewhere.jpg"
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_the_lock_never_follows_a_symlink(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (tmp_path / "out.jsonl.lock").symlink_to(victim)
    with pytest.raises(InputError, match="symbolic link"):
        with output_lock(tmp_path / "out.jsonl"):
            pass
    assert victim.read_text() == "keep me"


def test_a_lock_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "out.jsonl.lock")
    with pytest.raises(InputError, match="not a regular file"):
        with output_lock(tmp_path / "out.jsonl"):
            pass


def test_an_empty_verdicts_file_does_not_mark_its_shard_done(tmp_path, capsys):
    from runtime.data import verdicts

    rows = pairs(0, 4)
    write_webdataset(tmp_path / "in", 0, rows)
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(verdicts.schema().empty_table(), out / "00000.aitqe.parquet")
    rc, err = run(capsys, "--input", tmp_path / "in", "--output", out, "--keep-min-overall", "1",
                  "--keep-list", tmp_path / "keep.txt")
    assert rc == 0, err
    assert "ArrowInvalid" not in err
    assert sorted(r["key"] for r in verdicts.read(out / "00000.aitqe.parquet")) == sorted(p["key"] for p in rows)
    assert verdicts.complete(out / "00000.aitqe.parquet")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_is_refused_before_any_scoring(tmp_path, capsys, monkeypatch):
    write_webdataset(tmp_path / "in", 0, pairs(0, 4))
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    monkeypatch.setattr("runtime.launch.cli.cached_loader", lambda spec: lambda: pytest.fail("the model was loaded"))
    rc, err = run(capsys, "--input", tmp_path / "in", "--output", out)
    assert rc == 1 and err.startswith("error: --output") and "cannot write" in err and err.count("\n") == 1


def test_an_unwritable_output_is_refused_before_any_scoring(tmp_path, capsys, monkeypatch):
    """As root too: the output folder is one the kernel refuses files in whoever asks (a file's path)."""
    from runtime.data import shard_output

    write_webdataset(tmp_path / "in", 0, pairs(0, 4))
    real = shard_output.check_writable

    def unwritable(folder, flag):
        real(folder / "blocked" / "x" if flag == "--output" else folder, flag)

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "blocked").write_text("a file where a folder should be")
    monkeypatch.setattr(shard_output, "check_writable", unwritable)
    monkeypatch.setattr("runtime.launch.cli.cached_loader", lambda spec: lambda: pytest.fail("the model was loaded"))
    rc, err = run(capsys, "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert rc == 1 and err.startswith("error: --output") and "cannot write" in err


def test_a_corrupt_row_group_costs_only_its_own_rows(tmp_path):
    rows = pairs(0, 12)
    path = write_parquet(tmp_path, 0, rows, row_group_size=4)
    meta = pq.ParquetFile(path).metadata.row_group(1)
    data = bytearray(path.read_bytes())
    for i in range(meta.num_columns):  # every column chunk of the row group, keys too
        col = meta.column(i)
        start = col.dictionary_page_offset or col.data_page_offset
        data[start: start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    path.write_bytes(bytes(data))
    got = list(read_parquet(Shard(path, "parquet")))
    assert len(got) == 12
    assert [r.key for r in got[:4] + got[8:]] == [p["key"] for p in rows[:4] + rows[8:]]
    assert all(r.error is None for r in got[:4] + got[8:])
    assert all("row group 1" in r.error for r in got[4:8])


def test_a_key_whose_members_are_all_links_gets_an_error_record(tmp_path):
    path = tar_of(tmp_path / "s.tar", [("a.jpg", None, tarfile.SYMTYPE), ("a.txt", None, tarfile.LNKTYPE),
                                       ("b.jpg", None, tarfile.CHRTYPE)])
    got = list(read_tar(Shard(path, "webdataset")))
    assert [r.key for r in got] == ["a", "b"]
    assert all("link or device" in r.error for r in got)


def test_adjacent_members_with_the_same_key_are_not_merged(tmp_path):
    jpg = pairs(0, 1)[0]["jpg"]
    path = tar_of(tmp_path / "s.tar", [("k.jpg", jpg, b""), ("k.txt", b"first", b""),
                                       ("k.jpg", jpg, b""), ("k.txt", b"second", b"")])
    got = list(read_tar(Shard(path, "webdataset")))
    assert len(got) == 2 and got[0].caption == "first" and got[0].error is None
    assert got[1].key == "k" and "appears twice" in got[1].error


@pytest.mark.parametrize("name", ["x.tar.gz", "x.tgz", "x.tar.xz"])
def test_a_compressed_tar_is_refused_not_read_as_jsonl(tmp_path, capsys, name):
    with tarfile.open(tmp_path / name, "w:gz" if "g" in name else "w:xz") as tf:
        tf.addfile(tarfile.TarInfo("a.txt"))
    rc, err = run(capsys, "--input", tmp_path / name, "--output", tmp_path / "out")
    assert rc == 1 and err.startswith("error: ") and "compressed tar" in err and err.count("\n") == 1
    with pytest.raises(InputError, match="decompress"):
        is_shard_input(str(tmp_path / name))


def test_enhanced_copies_keep_no_parent_or_absolute_member_names(tmp_path):
    from runtime.data.enhance import Fate
    from runtime.data.webdataset_tar import write_enhanced

    jpg = pairs(0, 1)[0]["jpg"]
    path = tar_of(tmp_path / "s.tar", [("../up/a.jpg", jpg, b""), ("../up/a.txt", b"a", b""),
                                       ("/abs/b.jpg", jpg, b""), ("/abs/b.txt", b"b", b"")])
    write_enhanced(find_shards(str(path))[0], tmp_path / "copy.tar", lambda key: Fate("new", 1))
    with tarfile.open(tmp_path / "copy.tar") as tf:
        names = tf.getnames()
    assert names and all(not n.startswith("/") and ".." not in n.split("/") for n in names), names
