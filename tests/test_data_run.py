"""`python -m runtime.score` on shard folders with the demo model: one verdict row per key, good
pairs scored as the scorer scores them directly, an enhanced copy that webdataset and pyarrow open,
the keep list, resume shard by shard, and --shard-index splits giving the same rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from runtime.demo import DEMO_MODEL
from runtime.demo.shards import pairs, write_parquet, write_webdataset
from runtime.score import main
from runtime.scorer import Pair, Scorer
from tests.data_shards import FAST, corrupt_header, member_offset, rewrite_tar, run

THRESHOLD = 6


def rows_of(folder: Path) -> dict[str, list[dict]]:
    return {p.name: pq.read_table(p).to_pylist() for p in sorted(folder.glob("*.aitqe.parquet"))}


@pytest.fixture(scope="module")
def demo_scorer():
    return Scorer.from_pretrained(DEMO_MODEL, device="cpu")


@pytest.fixture(scope="module")
def damaged_wds(tmp_path_factory):
    """Two shards of 16 pairs: shard 0 with a missing caption, undecodable image bytes and a corrupt
    member header; shard 1 cut short inside its 14th pair (a killed download)."""
    folder = tmp_path_factory.mktemp("wds")
    data = {s: pairs(s, 16) for s in range(2)}
    for s, rows in data.items():
        write_webdataset(folder, s, rows)
    k0, k1 = [p["key"] for p in data[0]], [p["key"] for p in data[1]]
    rewrite_tar(folder / "00000.tar", lambda n, d: None if n == f"{k0[2]}.txt" else
                b"\xff\xd8 not a jpeg" if n == f"{k0[5]}.jpg" else d)
    corrupt_header(folder / "00000.tar", f"{k0[9]}.jpg")
    tar1 = folder / "00001.tar"
    tar1.write_bytes(tar1.read_bytes()[:member_offset(tar1, f"{k1[13]}.jpg") + 50])
    broken = {k0[2]: "missing", k0[5]: "not a recognized image", k0[9]: "no image",
              k1[13]: "truncated", k1[14]: "not in the tar", k1[15]: "not in the tar"}
    return folder, data, broken


@pytest.fixture(scope="module")
def wds_run(damaged_wds, tmp_path_factory, demo_scorer):
    folder, data, broken = damaged_wds
    out, enhanced = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("enhanced")
    keep = tmp_path_factory.mktemp("keep") / f"keep_overall_ge_{THRESHOLD}.npy"
    rc = main(["--model=demo", f"--input={folder}", f"--output={out}", f"--enhance-below={THRESHOLD}",
               f"--enhanced-output={enhanced}", f"--keep-min-overall={THRESHOLD}", f"--keep-list={keep}", *FAST])
    assert rc == 0
    return out, enhanced, keep


def test_every_key_one_row_and_good_pairs_scored_as_the_scorer_does(damaged_wds, wds_run, demo_scorer):
    folder, data, broken = damaged_wds
    got = rows_of(wds_run[0])
    assert list(got) == ["00000.aitqe.parquet", "00001.aitqe.parquet"]
    for s, name in enumerate(got):
        assert [r["key"] for r in got[name]] == [p["key"] for p in data[s]]  # the tar's failed download not included
        good = [p for p in data[s] if p["key"] not in broken]
        want = demo_scorer.score_stream([Pair(p["jpg"], p["caption"], p["key"]) for p in good], batch_size=4)
        by_key = {r["key"]: r for r in got[name]}
        for p, v in zip(good, want):
            r = by_key[p["key"]]
            assert (r["overall"], r["recaption"], r["error"], r["uid"]) == (v.overall_score, v.recaption, None, p["uid"])
            assert r["overall_expected"] == v.overall_expected is not None and r["model"] == "aitqe-demo"
            assert r["model_fingerprint"].startswith("sha256:")
        for key, words in broken.items():
            if key in by_key:
                assert words in by_key[key]["error"] and by_key[key]["overall"] is None
    assert sum(r["error"] is not None for rows in got.values() for r in rows) == len(broken)


def test_enhanced_webdataset_opens_with_webdataset(damaged_wds, wds_run):
    import webdataset as wds

    folder, data, broken = damaged_wds
    verdict = {r["key"]: r for rows in rows_of(wds_run[0]).values() for r in rows}
    original = {p["key"]: p["caption"] for rows in data.values() for p in rows}
    samples = [s for name in ("00000.tar", "00001.tar")
               for s in wds.WebDataset(str(wds_run[1] / name), shardshuffle=False).decode("pil")]
    # the pairs that failed are left out (the default), every other key is copied, in order
    assert [s["__key__"] for s in samples] == [k for k in original if k not in broken]
    replaced = 0
    for s in samples:
        key, meta = s["__key__"], s["json"]
        v = verdict[key]
        low = v["error"] is None and v["overall"] < THRESHOLD
        assert s["txt"] == meta["caption"] == (v["recaption"] if low else original[key]) and s["jpg"].size
        assert meta["original_caption"] == original[key] and meta["aitqe_overall"] == v["overall"]
        assert (v["replaced"], v["dropped"]) == (low, False)
        replaced += low
    assert 0 < replaced < len(samples)
    assert all(verdict[k]["dropped"] and not verdict[k]["replaced"] for k in broken if k in verdict)


def test_keep_list_is_datacomp_uids(damaged_wds, wds_run):
    rows = [r for rows in rows_of(wds_run[0]).values() for r in rows]
    kept = sorted(r["uid"] for r in rows if r["error"] is None and r["overall"] >= THRESHOLD)
    got = np.load(wds_run[2])
    assert got.dtype == np.dtype("u8,u8") and 0 < len(got) < len(rows)
    assert sorted(f"{int(a):016x}{int(b):016x}" for a, b in got.tolist()) == kept


def test_rerun_skips_done_shards_and_redoes_a_missing_one(damaged_wds, wds_run, capsys):
    folder = damaged_wds[0]
    out, enhanced, _ = wds_run
    before = {p.name: p.read_bytes() for p in [*out.iterdir(), *enhanced.iterdir()]}
    args = (f"--input={folder}", f"--output={out}", f"--enhance-below={THRESHOLD}", f"--enhanced-output={enhanced}")
    rc, err = run(capsys, *args)
    assert rc == 0 and {p.name: p.read_bytes() for p in [*out.iterdir(), *enhanced.iterdir()]} == before
    (out / "00001.aitqe.parquet").unlink()
    (enhanced / "00001.tar").unlink()
    (out / ".tmp-dead0000-00001.aitqe.parquet").write_bytes(b"half")  # left by a killed run
    rc, err = run(capsys, *args)
    assert rc == 0
    assert {p.name: p.read_bytes() for p in [*out.iterdir(), *enhanced.iterdir()]} == before


def test_verdicts_of_another_model_are_not_taken_as_done(damaged_wds, wds_run, tmp_path, capsys):
    import shutil

    import pyarrow as pa

    out = tmp_path / "out"
    shutil.copytree(wds_run[0], out)
    table = pq.read_table(out / "00000.aitqe.parquet")
    other = pa.array(["sha256:other"] * table.num_rows, pa.string())
    pq.write_table(table.set_column(table.schema.get_field_index("model_fingerprint"), "model_fingerprint", other),
                   out / "00000.aitqe.parquet")
    rc, err = run(capsys, f"--input={damaged_wds[0]}", f"--output={out}")
    assert rc == 1 and "scored with another model" in err


def test_shard_index_split_gives_the_same_rows(damaged_wds, wds_run, tmp_path, capsys):
    for i in range(2):
        rc, err = run(capsys, f"--input={damaged_wds[0]}", f"--output={tmp_path / 'v'}", f"--shard-index={i}",
                      "--num-shards=2", f"--workers={i}",  # index 1: a reader worker decodes ahead
                      f"--enhance-below={THRESHOLD}", f"--enhanced-output={tmp_path / 'e'}")
        assert rc == 0
    assert rows_of(tmp_path / "v") == rows_of(wds_run[0])


def test_parquet_shard_scored_and_enhanced(tmp_path, capsys):
    data = pairs(3, 12)
    data[4]["jpg"] = b"not an image at all"
    path = write_parquet(tmp_path / "in", 3, data, row_group_size=5)
    table = pq.read_table(path)
    caps = table.column("txt").to_pylist()
    caps[7] = None
    pq.write_table(table.set_column(3, "txt", [caps]), path, row_group_size=5)
    rc, err = run(capsys, f"--input={path}", f"--output={tmp_path / 'out'}", "--enhance-below=6",
                  f"--enhanced-output={tmp_path / 'enh'}", "--keep-min-overall=9", f"--keep-list={tmp_path / 'k.txt'}")
    assert rc == 0, err
    rows = pq.read_table(tmp_path / "out" / "00003.aitqe.parquet").to_pylist()
    assert [r["key"] for r in rows] == [p["key"] for p in data]
    assert [i for i, r in enumerate(rows) if r["error"]] == [4, 7]
    assert "caption is null" in rows[7]["error"] and "image" in rows[4]["error"]
    enh = pq.read_table(tmp_path / "enh" / "00003.parquet")
    assert enh.column_names == ["key", "uid", "jpg", "txt", "original_caption", "aitqe_overall"]
    e = enh.to_pylist()
    kept = [i for i, r in enumerate(rows) if not r["error"]]  # the pairs that failed are left out
    assert [r["jpg"] for r in e] == [data[i]["jpg"] for i in kept]
    for r, v, c in zip(e, [rows[i] for i in kept], [caps[i] for i in kept]):
        low = v["error"] is None and v["overall"] < 6
        assert r["txt"] == (v["recaption"] if low else c) and r["original_caption"] == c
    assert any(v["error"] is None and v["overall"] < 6 for v in rows)


def test_csv_pairs_keep_todays_jsonl_output(tmp_path, capsys):
    data = pairs(0, 3)
    for p in data:
        (tmp_path / f"{p['key']}.jpg").write_bytes(p["jpg"])
    lines = ["id,image,caption"] + [f'{p["key"]},{p["key"]}.jpg,"{p["caption"]}"' for p in data]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rc, err = run(capsys, f"--input={tmp_path / 'pairs.csv'}", f"--output={tmp_path / 'out.jsonl'}")
    assert rc == 0, err
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["line"], r["error"]) for r in out] == [(p["key"], i + 1, None) for i, p in enumerate(data)]


@pytest.mark.parametrize("extra, words", [
    (["--enhance-below=5"], "go together"),
    (["--num-gpus=2"], "--ray"),
    (["--ray"], "pip install 'aitqe-edge[ray]'"),
])
def test_bad_dataset_flags_are_one_line_errors(damaged_wds, tmp_path, capsys, monkeypatch, extra, words):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    rc, err = run(capsys, f"--input={damaged_wds[0]}", f"--output={tmp_path}", *extra)
    assert rc == 1 and err.count("\n") == 1 and err.startswith("error:") and words in err, err


def test_dataset_flags_on_a_pairs_file_are_refused(tmp_path, capsys):
    (tmp_path / "pairs.jsonl").write_text("")
    rc, err = run(capsys, f"--input={tmp_path / 'pairs.jsonl'}", f"--output={tmp_path / 'o.jsonl'}", "--keep-above=5")
    assert rc == 1 and err.startswith("error: --keep-above: only for shard inputs"), err


def test_no_shards_and_enhancing_over_the_input_are_refused(damaged_wds, tmp_path, capsys):
    rc, err = run(capsys, f"--input={damaged_wds[0]}", f"--output={tmp_path / 'o'}", f"--model={tmp_path}")
    assert rc == 1 and err.startswith("error: --model") and err.count("\n") == 1, err
    rc, err = run(capsys, f"--input={tmp_path}", f"--output={tmp_path / 'o'}")
    assert rc == 1 and err.startswith("error:") and "no .tar or .parquet shards" in err
    rc, err = run(capsys, f"--input={damaged_wds[0]}", f"--output={tmp_path / 'o'}", "--enhance-below=5",
                  f"--enhanced-output={damaged_wds[0]}")
    assert rc == 1 and "overwrite" in err
