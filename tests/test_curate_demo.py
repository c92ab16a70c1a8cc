"""The curator's walk, part 0: the demo model never scores a dataset unasked, and a long run shows
its progress. Batch modes without --model refuse in one line; `--model demo` says so once on stderr
and puts the note on every record; shard mode shows one bar of pairs (rate, ETA) and a line per shard,
and `--quiet` shows neither."""

from __future__ import annotations

import json
import re

import pytest

from runtime.demo import DEMO_NOTE
from runtime.demo.shards import pairs, write_parquet
from runtime.score import main

CPU = ["--device", "cpu", "--batch-size", "4"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    lines = []
    for p in pairs(0, 3):
        (folder / f"{p['key']}.jpg").write_bytes(p["jpg"])
        lines.append({"id": p["key"], "image": f"{p['key']}.jpg", "caption": p["caption"]})
    lines.append({"id": "broken", "image": "missing.jpg", "caption": "a red square"})
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder / "pairs.jsonl"


@pytest.fixture(scope="module")
def parquet_shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    for s in range(2):
        write_parquet(folder, s, pairs(s, 5))
    return folder


def test_batch_modes_without_a_model_refuse_in_one_line(pairs_file, parquet_shards, tmp_path, capsys):
    for source, out in ((pairs_file, tmp_path / "o.jsonl"), (parquet_shards, tmp_path / "v")):
        assert main(["--input", str(source), "--output", str(out), *CPU]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: no --model") and err.count("\n") == 1, err
        assert "pass --model ORG/NAME or a checkpoint folder, or --model demo to try the built-in demo model" in err
        assert not out.exists()


def test_demo_on_a_pairs_file_says_so_once_and_on_every_record(pairs_file, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    assert main(["--model", "demo", "--input", str(pairs_file), "--output", str(out), "--quiet", *CPU]) == 0
    err = capsys.readouterr().err
    assert err.count("note: --model demo") == 1 and DEMO_NOTE in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["note"] for r in records] == [DEMO_NOTE] * 4
    assert records[0]["caption"] == json.loads(pairs_file.read_text().splitlines()[0])["caption"]
    assert records[3]["error"] and records[3]["caption"] == "a red square"


def test_shard_mode_shows_a_bar_of_pairs_and_a_line_per_shard(parquet_shards, tmp_path, capsys):
    assert main(["--model", "demo", "--input", str(parquet_shards), "--output", str(tmp_path / "v"), *CPU]) == 0
    err = capsys.readouterr().err
    assert err.count("note: --model demo") == 1
    assert re.search(r"10/10 \[[\d:]+<[\d:]+, +[\d.]+(pair/s|s/pair)\]", err), err  # total from the footers, ETA, rate
    assert "00000.parquet: 5 keys (0 with errors) scored in" in err and "00001.parquet: 5 keys" in err
    assert main(["--model", "demo", "--input", str(parquet_shards), "--output", str(tmp_path / "q"), "--quiet",
                 *CPU]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("note: --model demo") and lines[1].startswith("2 of 2 shards done")
