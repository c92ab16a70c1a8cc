"""A dataset format added from outside the package, in this file only: folders of image files with
sidecar `.txt` captions (`a.jpg` + `a.txt`), one folder a shard. Registered here, it is found,
read and scored end to end by `python -m runtime.score` into per-shard verdicts, resumed shard by
shard, as the built-in formats are; no other file names it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from runtime.data.formats import Format, register, unregister
from runtime.data.records import Record, Shard, find_shards, keyed
from runtime.demo import DEMO_MODEL
from runtime.demo.shards import pairs
from runtime.score import main
from runtime.scorer import Pair, Scorer

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def captioned_folders(folder: Path) -> list[Path]:
    """The shards a folder holds: itself if it holds images, else its sub-folders that do."""
    if _images(folder):
        return [folder]
    return sorted(d for d in folder.iterdir() if d.is_dir() and _images(d))


def read_captioned(shard: Shard, opts) -> Iterator[Record]:
    """One record per image, keyed by its stem; an image without its .txt is an error record."""
    for image in _images(shard.path):
        caption = image.with_suffix(".txt")
        rec = keyed(image.stem, shard.path.name, image=str(image))
        if caption.is_file():
            rec.caption = caption.read_text(encoding="utf-8")
        else:
            rec.image, rec.error = None, f"no caption: {caption.name} is missing; add it"
        yield rec


CAPTIONED = Format("captioned-images", "captioned image folder", read_captioned, find=captioned_folders)


@pytest.fixture
def captioned_format():
    register(CAPTIONED)
    yield CAPTIONED
    unregister(CAPTIONED.name)


@pytest.fixture
def captioned_shards(tmp_path) -> tuple[Path, dict[str, list[dict]]]:
    """Two folders of demo-world pairs; in the first, one image lost its caption."""
    root, data = tmp_path / "captioned", {}
    for s, name in enumerate(("part-a", "part-b")):
        folder = root / name
        folder.mkdir(parents=True)
        data[name] = pairs(s, 5 - s)
        for p in data[name]:
            (folder / f"{p['key']}.jpg").write_bytes(p["jpg"])
            (folder / f"{p['key']}.txt").write_text(p["caption"], encoding="utf-8")
    (root / "part-a" / f"{data['part-a'][2]['key']}.txt").unlink()
    return root, data


def test_a_format_registered_from_outside_is_scored_end_to_end(captioned_format, captioned_shards, tmp_path, capsys):
    root, data = captioned_shards
    assert [(s.name, s.format) for s in find_shards(str(root))] == [("part-a", "captioned-images"),
                                                                    ("part-b", "captioned-images")]
    out = tmp_path / "verdicts"
    argv = ["--model", "demo", "--input", str(root), "--output", str(out), "--device", "cpu", "--batch-size", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "part-a: 5 keys (1 with errors) scored" in err and "2 of 2 shards done (9 keys)" in err, err

    got = {p.name: pq.read_table(p).to_pylist() for p in sorted(out.glob("*.aitqe.parquet"))}
    assert list(got) == ["part-a.aitqe.parquet", "part-b.aitqe.parquet"]
    scorer = Scorer.from_pretrained(DEMO_MODEL, device="cpu")
    lost = data["part-a"][2]["key"]
    for name, rows in zip(("part-a", "part-b"), got.values()):
        assert [r["key"] for r in rows] == [p["key"] for p in data[name]]  # one row per image, in order
        assert {r["shard"] for r in rows} == {name} and {r["model"] for r in rows} == {"aitqe-demo"}
        good = [p for p in data[name] if p["key"] != lost]
        folder = root / name
        want = scorer.score_stream([Pair(str(folder / f"{p['key']}.jpg"), p["caption"], p["key"]) for p in good],
                                   batch_size=2)
        by_key = {r["key"]: r for r in rows}
        for p, v in zip(good, want):
            r = by_key[p["key"]]
            assert (r["error"], r["overall"], r["recaption"]) == (None, v.overall_score, v.recaption)
            assert r["model_fingerprint"].startswith("sha256:")
    row = next(r for r in got["part-a.aitqe.parquet"] if r["key"] == lost)
    assert "no caption" in row["error"] and row["overall"] is None and row["raw_text"] is None

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main([*argv, "--quiet"]) == 0  # resumed shard by shard: nothing left to score
    assert "2 of 2 shards done (9 keys)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_unregistered_the_folder_is_no_input(captioned_shards, tmp_path, capsys):
    assert main(["--model", "demo", "--input", str(captioned_shards[0]), "--output", str(tmp_path / "v"), "--device", "cpu"]) == 1
    assert "no .tar or .parquet shards in this folder" in capsys.readouterr().err
