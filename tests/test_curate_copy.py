"""The curator's walk, part 1: an enhanced copy a training loader reads end to end. A shard with a
corrupt image and a caption-less sample is scored with `--enhance-below`; its copy opens with
`webdataset.WebDataset(...).decode("pil")` and `pd.read_parquet`, `txt` and `json["caption"]` agree,
failed pairs are left out (or kept with --keep-failed), --drop-below leaves out the low-scored ones,
and img2dataset's sibling metadata and stats come along, updated. The verdicts say what happened."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from runtime.data import verdicts
from runtime.demo.shards import pairs, write_parquet, write_webdataset
from tests.data_shards import rewrite_tar, run

BELOW = 6


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """One img2dataset-style WebDataset shard of 10 pairs (metadata and stats beside it): pair 2 has
    no caption, pair 5 undecodable image bytes."""
    folder = tmp_path_factory.mktemp("wds")
    data = pairs(0, 10)
    write_webdataset(folder, 0, data)
    keys = [p["key"] for p in data]
    rewrite_tar(folder / "00000.tar", lambda n, d: None if n == f"{keys[2]}.txt" else
                b"\xff\xd8 not a jpeg" if n == f"{keys[5]}.jpg" else d)
    stats = {"count": 11, "successes": 10, "failed_to_download": 1, "status_dict": {"success": 10}}
    (folder / "00000_stats.json").write_text(json.dumps(stats))
    return folder, data, {keys[2], keys[5]}


def score(capsys, shards, tmp_path, *extra):
    folder = shards[0]
    rc, err = run(capsys, f"--input={folder}", f"--output={tmp_path / 'verdicts'}", f"--enhance-below={BELOW}",
                  f"--enhanced-output={tmp_path / 'enhanced'}", *extra)
    assert rc == 0, err
    return {r["key"]: r for r in verdicts.read(tmp_path / "verdicts" / "00000.aitqe.parquet")}, err


def test_the_copy_reads_end_to_end_with_webdataset_and_agrees_with_the_verdicts(shards, tmp_path, capsys):
    import webdataset as wds

    folder, data, failed = shards
    rows, err = score(capsys, shards, tmp_path)
    original = {p["key"]: p["caption"] for p in data}
    samples = list(wds.WebDataset(str(tmp_path / "enhanced" / "00000.tar"), shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == [k for k in original if k not in failed]
    for s in samples:
        v = rows[s["__key__"]]
        want = v["recaption"] if v["overall"] < BELOW else original[s["__key__"]]
        assert s["txt"] == s["json"]["caption"] == want and s["jpg"].size == (48, 48)
        assert s["json"]["original_caption"] == original[s["__key__"]] == v["caption"]
        assert s["json"]["aitqe_overall"] == v["overall"] and v["replaced"] == (want != original[s["__key__"]])
        assert not v["dropped"]
    assert any(v["replaced"] for v in rows.values())
    assert all(rows[k]["dropped"] and not rows[k]["replaced"] and rows[k]["error"] for k in failed)
    assert rows[sorted(failed)[0]]["caption"] is None  # the caption-less pair

    meta = pd.read_parquet(tmp_path / "enhanced" / "00000.parquet")  # img2dataset's metadata, carried
    assert set(meta["key"]) == ({p["key"] for p in data} - failed) | {"000009999"}  # the failed download stays
    by_key = {s["__key__"]: s["txt"] for s in samples}
    assert all(meta.set_index("key").loc[k, "caption"] == c for k, c in by_key.items())
    stats = json.loads((tmp_path / "enhanced" / "00000_stats.json").read_text())
    replaced = sum(v["replaced"] for v in rows.values())
    assert (stats["count"], stats["successes"], stats["status_dict"]["success"]) == (9, 8, 8)
    assert stats["aitqe"] == {"source_successes": 10, "replaced": replaced, "dropped": 2, "enhance_below": BELOW,
                              "drop_below": None, "keep_failed": False}


def test_keep_failed_keeps_them_and_drop_below_drops_the_low_scored(shards, tmp_path, capsys):
    import webdataset as wds

    folder, data, failed = shards
    rows, _ = score(capsys, shards, tmp_path, "--keep-failed", "--drop-below=5")
    keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "enhanced" / "00000.tar"), shardshuffle=False)]
    low = {k for k, v in rows.items() if v["overall"] is not None and v["overall"] < 5}
    assert low, "the demo world's shards have pairs scored below 5"
    assert keys == [p["key"] for p in data if p["key"] not in low]
    assert {k for k, v in rows.items() if v["dropped"]} == low
    run_settings = verdicts.run_of(tmp_path / "verdicts" / "00000.aitqe.parquet")
    assert (run_settings["drop_below"], run_settings["keep_failed"], run_settings["enhance_below"]) == (5, True, BELOW)


def test_a_parquet_copy_reads_with_pandas(tmp_path, capsys):
    data = pairs(1, 8)
    data[3]["jpg"] = b"not an image"
    path = write_parquet(tmp_path / "in", 1, data)
    rc, err = run(capsys, f"--input={path}", f"--output={tmp_path / 'verdicts'}", f"--enhance-below={BELOW}",
                  f"--enhanced-output={tmp_path / 'enhanced'}")
    assert rc == 0, err
    copy = pd.read_parquet(tmp_path / "enhanced" / "00001.parquet")
    rows = verdicts.read(tmp_path / "verdicts" / "00001.aitqe.parquet")
    kept = [r for r in rows if not r["dropped"]]
    assert list(copy["key"]) == [r["key"] for r in kept] == [p["key"] for i, p in enumerate(data) if i != 3]
    assert list(copy["txt"]) == [r["recaption"] if r["replaced"] else r["caption"] for r in kept]
    assert list(copy["original_caption"]) == [r["caption"] for r in kept]
    assert pq.read_table(tmp_path / "enhanced" / "00001.parquet").num_rows == 7


def test_a_copy_made_later_from_the_verdicts_marks_them(shards, tmp_path, capsys):
    rc, err = run(capsys, f"--input={shards[0]}", f"--output={tmp_path / 'verdicts'}")
    assert rc == 0, err
    path = tmp_path / "verdicts" / "00000.aitqe.parquet"
    assert not any(r["replaced"] or r["dropped"] for r in verdicts.read(path))
    assert verdicts.run_of(path)["enhance_below"] is None
    rows, _ = score(capsys, shards, tmp_path)  # resumed: no scoring, the copy made from the verdicts
    assert {k for k, r in rows.items() if r["dropped"]} == shards[2] and any(r["replaced"] for r in rows.values())
    assert verdicts.run_of(path)["enhance_below"] == BELOW


def test_verdicts_of_an_older_version_stay_done_and_a_copy_completes_them(tmp_path, capsys, monkeypatch):
    write_webdataset(tmp_path / "in", 0, pairs(0, 4))
    rc, err = run(capsys, f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'verdicts'}")
    assert rc == 0, err
    path = tmp_path / "verdicts" / "00000.aitqe.parquet"
    old = pq.read_table(path).drop_columns(["caption", "replaced", "dropped", "note"])
    pq.write_table(old.replace_schema_metadata({verdicts.COMPLETE: "4"}), path)
    monkeypatch.setattr("runtime.launch.cli.cached_loader", lambda spec: lambda: pytest.fail("the model was loaded"))
    rows, _ = score(capsys, (tmp_path / "in",), tmp_path)  # nothing scored (the loader above fails), the copy made
    assert any(r["replaced"] for r in rows.values()) and all(r["caption"] is None for r in rows.values())
    assert verdicts.run_of(path)["enhance_below"] == BELOW
