"""Readers of runtime.data on real shards of demo-world pairs (no model): every key gets exactly one
record, damaged keys carry an error naming the problem, the rest of the shard is read intact."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.data import parquet_table, webdataset_tar
from runtime.data.csv_table import read_csv
from runtime.data.jsonl import read_jsonl
from runtime.data.records import ShardError, find_shards, is_shard_input, pick
from runtime.errors import InputError
from runtime.demo.shards import pairs, write_parquet, write_webdataset
from tests.data_shards import corrupt_header, member_offset, rewrite_tar

N = 100  # pairs per shard; three shards: a few hundred pairs


@pytest.fixture(scope="module")
def shard_pairs():
    return {s: pairs(s, N) for s in range(3)}


def wds_folder(tmp_path: Path, shard_pairs) -> Path:
    for s, rows in shard_pairs.items():
        write_webdataset(tmp_path / "wds", s, rows)
    return tmp_path / "wds"


def test_clean_webdataset_shards_give_every_pair(tmp_path, shard_pairs):
    shards = find_shards(str(wds_folder(tmp_path, shard_pairs)))
    assert [s.path.name for s in shards] == ["00000.tar", "00001.tar", "00002.tar"]  # metadata .parquet not a shard
    assert all(s.meta is not None for s in shards)
    for shard, rows in zip(shards, shard_pairs.values()):
        records = list(webdataset_tar.read_shard(shard))
        assert [(r.key, r.uid, r.caption, r.image) for r in records] == \
               [(p["key"], p["uid"], p["caption"], p["jpg"]) for p in rows]
        assert all(r.error is None for r in records)


def test_damaged_webdataset_shard_keeps_the_rest(tmp_path, shard_pairs):
    folder = wds_folder(tmp_path, shard_pairs)
    keys = [p["key"] for p in shard_pairs[0]]
    shard0, shard1 = folder / "00000.tar", folder / "00001.tar"
    rewrite_tar(shard0, lambda name, data: (None if name == f"{keys[3]}.txt" else
                                            b"\xff\xfe bad" if name == f"{keys[5]}.txt" else
                                            data[:200] if name == f"{keys[7]}.jpg" else data))
    corrupt_header(shard0, f"{keys[9]}.jpg")
    # shard 1: a killed download, cut inside the data of the 60th pair's image
    keys1 = [p["key"] for p in shard_pairs[1]]
    cut = member_offset(shard1, f"{keys1[60]}.jpg") + 100
    shard1.write_bytes(shard1.read_bytes()[:cut])

    by_shard = {s.path.name: list(webdataset_tar.read_shard(s)) for s in find_shards(str(folder))}
    r0 = {r.key: r for r in by_shard["00000.tar"]}
    assert [r.key for r in by_shard["00000.tar"]] == keys  # one record per key, in order
    assert "missing" in r0[keys[3]].error and ".txt" in r0[keys[3]].error
    assert "UTF-8" in r0[keys[5]].error
    assert r0[keys[7]].error is None and len(r0[keys[7]].image) == 200  # the scorer refuses the bytes
    assert "no image" in r0[keys[9]].error
    assert sum(r.error is not None for r in r0.values()) == 3

    r1 = by_shard["00001.tar"]
    assert [r.key for r in r1] == keys1  # the lost keys come from the sibling metadata
    assert all(r.error is None for r in r1[:60])
    assert "truncated" in r1[60].error
    assert all("not in the tar" in r.error for r in r1[61:])
    assert "000019999" not in {r.key for r in r1}  # img2dataset's failed download is no pair
    assert [r.caption for r in by_shard["00002.tar"]] == [p["caption"] for p in shard_pairs[2]]


def test_truncated_tar_without_metadata(tmp_path, shard_pairs):
    path = write_webdataset(tmp_path, 0, shard_pairs[0][:10])
    (tmp_path / "00000.parquet").unlink()
    keys = [p["key"] for p in shard_pairs[0][:10]]
    path.write_bytes(path.read_bytes()[:member_offset(path, f"{keys[4]}.json") + 3])
    records = list(webdataset_tar.read_shard(find_shards(str(path))[0]))
    assert [r.key for r in records] == keys[:5]
    assert [r.error is None for r in records] == [True] * 4 + [False]


def test_not_a_tar_is_a_shard_error(tmp_path):
    bad = tmp_path / "00000.tar"
    bad.write_bytes(b"<html>404 not found</html>" * 40)
    with pytest.raises(ShardError, match="no member could be read"):
        list(webdataset_tar.read_shard(find_shards(str(bad))[0]))


def test_caption_from_a_json_field(tmp_path, shard_pairs):
    path = write_webdataset(tmp_path, 0, shard_pairs[0][:5])
    rewrite_tar(path, lambda name, data: None if name.endswith(".txt") else data)
    shard = find_shards(str(path))[0]
    assert [r.caption for r in webdataset_tar.read_shard(shard, "caption")] == [p["caption"] for p in shard_pairs[0][:5]]
    assert all("--caption-field" in r.error for r in webdataset_tar.read_shard(shard))


def test_parquet_shards_and_wrong_types(tmp_path, shard_pairs):
    path = write_parquet(tmp_path / "pq", 0, shard_pairs[0])
    records = list(parquet_table.read_shard(find_shards(str(tmp_path / "pq"))[0]))
    assert [(r.key, r.uid, r.caption, r.image) for r in records] == \
           [(p["key"], p["uid"], p["caption"], p["jpg"]) for p in shard_pairs[0]]
    rows = pq.read_table(path).to_pylist()
    rows[2]["txt"], rows[4]["jpg"], rows[6]["key"] = None, None, rows[5]["key"]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=16)
    got = list(parquet_table.read_shard(find_shards(str(path))[0]))
    assert len(got) == N
    errors = {i: r.error for i, r in enumerate(got) if r.error}
    assert set(errors) == {2, 4, 6}
    assert "caption is null" in errors[2] and "image is null" in errors[4] and "twice" in errors[6]


def test_parquet_caption_column_of_the_wrong_type(tmp_path, shard_pairs):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"key": ["a", "b"], "jpg": [shard_pairs[0][0]["jpg"]] * 2, "txt": [1, 2]}), path)
    got = list(parquet_table.read_shard(find_shards(str(path))[0]))
    assert [r.key for r in got] == ["a", "b"]
    assert all("caption is int, not text" in r.error for r in got)


def test_hf_image_struct_and_paths(tmp_path, shard_pairs):
    p = shard_pairs[0]
    (tmp_path / "img.jpg").write_bytes(p[1]["jpg"])
    table = pa.table({"id": ["x", "y"], "caption": ["c0", "c1"],
                      "image": [{"bytes": p[0]["jpg"], "path": None}, {"bytes": None, "path": "img.jpg"}]})
    pq.write_table(table, tmp_path / "hf.parquet")
    got = list(parquet_table.read_shard(find_shards(str(tmp_path / "hf.parquet"))[0]))
    assert [(r.key, r.caption, r.image) for r in got] == [("x", "c0", p[0]["jpg"]), ("y", "c1", str(tmp_path / "img.jpg"))]


def test_missing_column_names_the_flag(tmp_path):
    pq.write_table(pa.table({"key": ["a"], "jpg": [b"x"], "alt": ["c"]}), tmp_path / "x.parquet")
    shard = find_shards(str(tmp_path / "x.parquet"))[0]
    with pytest.raises(ShardError, match="--caption-column"):
        list(parquet_table.read_shard(shard))
    got = list(parquet_table.read_shard(shard, parquet_table.Columns(caption="alt")))
    assert got[0].caption == "c"


def test_shard_lists(tmp_path, shard_pairs):
    folder = wds_folder(tmp_path, shard_pairs)
    (folder / "00000.aitqe.parquet").write_bytes(b"")
    assert [s.name for s in find_shards(str(folder / "{00000..00001}.tar"))] == ["00000", "00001"]
    assert [s.name for s in find_shards(f"{folder}/00002.tar,{folder}/00000.tar")] == ["00002", "00000"]
    assert is_shard_input(str(folder)) and is_shard_input(str(folder / "{00000..00001}.tar"))
    assert not is_shard_input(str(tmp_path / "pairs.jsonl"))
    shards = find_shards(str(folder))
    assert [s.name for s in pick(shards, 0, 2)] == ["00000", "00002"] and [s.name for s in pick(shards, 1, 2)] == ["00001"]
    with pytest.raises(InputError, match="no such shard"):
        find_shards(str(folder / "{00000..00005}.tar"))


def test_csv_and_jsonl_records(tmp_path):
    (tmp_path / "pairs.csv").write_bytes(
        b'id,image,caption\n1,a.png,"a caption, with a comma\nand a line break"\n2,,no image\n1,b.png,dup\n'
        b"3,c.png,caf\xe9\n4,d.png,\n")
    got = list(read_csv(tmp_path / "pairs.csv"))
    assert [r.key for r in got] == ["1", "row 2", "row 3", "row 4", "4"]
    assert got[0].caption == "a caption, with a comma\nand a line break" and got[0].image == str(tmp_path / "a.png")
    assert "missing image" in got[1].error and "duplicate" in got[2].error and "UTF-8" in got[3].error
    assert got[4].error is None and got[4].caption == ""
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"id": 5, "image": "x.png", "caption": "c"}) + "\n{oops\n")
    got = list(read_jsonl(tmp_path / "pairs.jsonl"))
    assert [(r.key, r.error is None) for r in got] == [("5", True), ("line 2", False)]
