"""The curator's walk, part 2: verdict tables to query and keep lists re-derived without rescoring.
The verdicts folder holds only verdicts (pandas reads it whole), every row has the caption, the
`replaced`/`dropped` marks and the demo note, the file says the run's settings; `runtime.select`
writes the same keep list the score run wrote, in each format, with inclusive bounds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from runtime.data import verdicts
from runtime.demo import DEMO_NOTE
from runtime.demo.shards import pairs, write_webdataset
from runtime.select import main as select
from tests.data_shards import run

MIN = 6


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Two WebDataset shards of 6 pairs scored with an enhanced copy and a keep list (its default format)."""
    root = tmp_path_factory.mktemp("walk")
    for s in range(2):
        write_webdataset(root / "shards", s, pairs(s, 6))
    from runtime.score import main

    rc = main(["--model", "demo", f"--input={root / 'shards'}", f"--output={root / 'verdicts'}", "--enhance-below=6",
               f"--enhanced-output={root / 'enhanced'}", f"--keep-min-overall={MIN}", f"--keep-list={root / 'keep.npy'}",
               "--device", "cpu", "--quiet", "--batch-size", "4"])
    assert rc == 0
    return root


def test_the_verdicts_folder_reads_whole_with_pandas_and_has_the_curators_columns(scored):
    assert sorted(p.name for p in (scored / "verdicts").iterdir()) == ["00000.aitqe.parquet", "00001.aitqe.parquet"]
    table = pd.read_parquet(scored / "verdicts")
    assert len(table) == 12 and list(table.columns) == list(verdicts.COLUMNS)
    assert set(table["note"]) == {DEMO_NOTE} and table["caption"].notna().all()
    assert table["replaced"].any() and not table["dropped"].any()
    assert (table["replaced"] == (table["overall"] < 6)).all()
    meta = pq.read_metadata(scored / "verdicts" / "00000.aitqe.parquet").metadata
    run_settings = json.loads(meta[b"aitqe.run"])
    assert set(run_settings) == {"model", "model_fingerprint", "engine", "demo", "enhance_below", "drop_below",
                                 "keep_failed", "max_new_tokens", "output_all", "version"}
    assert run_settings["demo"] is True and run_settings["enhance_below"] == 6 and run_settings["engine"] == "fast"
    assert run_settings["model_fingerprint"] == table["model_fingerprint"][0] and meta[b"aitqe.complete_rows"] == b"6"


def test_duckdb_reads_the_verdicts_folder(scored):
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"select count(*) from '{scored / 'verdicts'}/*.parquet'").fetchall() == [(12,)]


@pytest.mark.parametrize("fmt", ["datacomp-npy", "keys", "parquet"])
def test_select_rederives_the_keep_list_of_the_score_run(scored, tmp_path, capsys, fmt):
    out = tmp_path / f"keep.{fmt}"
    assert select(["--verdicts", str(scored / "verdicts"), "--min-overall", str(MIN), "--format", fmt,
                   "--output", str(out)]) == 0
    table = pd.read_parquet(scored / "verdicts")
    kept = table[table["overall"] >= MIN]
    assert 0 < len(kept) < len(table)
    if fmt == "datacomp-npy":
        assert out.read_bytes() == (scored / "keep.npy").read_bytes()
        assert sorted(f"{int(a):016x}{int(b):016x}" for a, b in np.load(out).tolist()) == sorted(kept["uid"])
    elif fmt == "keys":
        assert out.read_text().split() == list(kept["key"])
    else:
        assert list(pd.read_parquet(out).columns) == ["key", "uid", "shard", "overall"]
        assert list(pd.read_parquet(out)["key"]) == list(kept["key"])
    assert f"{len(kept)} keys with overall >= {MIN}" in capsys.readouterr().err


def test_bounds_are_inclusive(scored, tmp_path):
    out = tmp_path / "six.txt"
    assert select(["--verdicts", str(scored / "verdicts"), "--min-overall", "6", "--max-overall", "6",
                   "--format", "keys", "--output", str(out)]) == 0
    table = pd.read_parquet(scored / "verdicts")
    assert out.read_text().split() == list(table[table["overall"] == 6]["key"])


def test_the_score_runs_keep_list_in_another_format_and_its_default_said(scored, tmp_path, capsys):
    args = [f"--input={scored / 'shards'}", f"--output={scored / 'verdicts'}", f"--keep-min-overall={MIN}"]
    rc, err = run(capsys, *args, f"--keep-list={tmp_path / 'keep.txt'}", "--keep-format=keys")
    assert rc == 0 and "(keys;" in err, err
    assert select(["--verdicts", str(scored / "verdicts"), "--min-overall", str(MIN), "--format", "keys",
                   "--output", str(tmp_path / "again.txt")]) == 0
    assert (tmp_path / "keep.txt").read_text() == (tmp_path / "again.txt").read_text()
    rc, err = run(capsys, *args, f"--keep-list={tmp_path / 'k.npy'}")
    assert rc == 0 and "datacomp-npy, the default as the pairs have DataComp uids" in err, err


def test_a_keep_list_inside_the_verdicts_folder_is_refused(scored, capsys):
    rc, err = run(capsys, f"--input={scored / 'shards'}", f"--output={scored / 'verdicts'}", "--keep-min-overall=6",
                  f"--keep-list={scored / 'verdicts' / 'keep.npy'}")
    assert rc == 1 and err.startswith("error: --keep-list") and err.count("\n") == 1, err
    assert select(["--verdicts", str(scored / "verdicts"), "--min-overall", "6", "--format", "keys",
                   "--output", str(scored / "verdicts" / "k.txt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --output") and "inside the verdicts folder" in err and err.count("\n") == 1
    assert not (scored / "verdicts" / "k.txt").exists()


@pytest.mark.parametrize("extra, words", [
    (["--keep-above=6"], "--keep-above is now --keep-min-overall 6 --keep-list FILE"),
    (["--keep-min-overall=6"], "go together"),
    (["--drop-below=4"], "give --enhance-below N"),
])
def test_keep_and_copy_flags_are_one_line_errors(scored, tmp_path, capsys, extra, words):
    rc, err = run(capsys, f"--input={scored / 'shards'}", f"--output={tmp_path / 'v'}", *extra)
    assert rc == 1 and err.startswith("error:") and err.count("\n") == 1 and words in err, err


def test_select_on_a_folder_without_verdicts_is_a_one_line_error(tmp_path, capsys):
    assert select(["--verdicts", str(tmp_path), "--min-overall", "6", "--format", "keys",
                   "--output", str(tmp_path / "k.txt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --verdicts") and err.count("\n") == 1
