"""The rules every batch format shares (runtime.data.stream, runtime.data.run): records a reader
refused keep their place, a model failing mid-stream goes on batch by batch with each failed pair
an error record, and one run per output (or per share of a shard split) holds the lock."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from runtime.data.records import Record, Shard
from runtime.data.stream import score_records
from runtime.demo.shards import pairs, write_webdataset
from runtime.lock import output_lock
from runtime.score import main
from runtime.scorer import Verdict

OPTS = SimpleNamespace(batch_size=2, workers=0, output_all=False, max_new_tokens=8)


class FlakyScorer:
    """Streams until its `fail_at`-th pair, then fails (out of memory, say); its batches fail on `bad`."""

    model_id = "flaky"

    def __init__(self, fail_at: int, bad: str):
        self.fail_at, self.bad, self.batches = fail_at, bad, []

    def verdict(self, pair: Record) -> Verdict:
        return Verdict(id=pair.id, model=self.model_id, error="empty image" if pair.image == b"" else None,
                       recaption=pair.caption)

    def score_stream(self, pairs, *, batch_size, workers, output_all, max_new_tokens):
        for n, pair in enumerate(pairs):
            if n == self.fail_at:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore lines")
            yield self.verdict(pair)

    def score_batch(self, pairs, *, output_all, max_new_tokens):
        self.batches.append([p.id for p in pairs])
        if any(p.id == self.bad for p in pairs):
            raise RuntimeError("out of memory")
        return [self.verdict(p) for p in pairs]


def unit(name: str, keys: list[str], refused: tuple[str, ...] = ()) -> tuple[Shard, list[Record]]:
    return Shard(Path(f"{name}.tar"), "webdataset"), [
        Record(key=k, id=k, source=name, error="corrupt member" if k in refused else None,
               image=None if k in refused else b"jpeg", caption=None if k in refused else f"caption {k}")
        for k in keys]


def test_model_failing_mid_stream_goes_on_batch_by_batch_for_every_unit(capsys):
    scorer = FlakyScorer(fail_at=2, bad="a3")
    events = list(score_records(scorer, [unit("a", ["a0", "a1", "a2", "a3"], refused=("a1",)),
                                         unit("b", ["b0", "b1"])], OPTS))
    got = [(e.shard.name, e.record.key if e.record else "end",
            None if e.verdict is None else (e.verdict.error or e.verdict.recaption)) for e in events]
    assert got == [("a", "a0", "caption a0"), ("a", "a1", None), ("a", "a2", "caption a2"),
                   ("a", "a3", "model failed on this pair: out of memory"), ("a", "end", None),
                   ("b", "b0", "caption b0"), ("b", "b1", "caption b1"), ("b", "end", None)]
    assert events[1].record.error == "corrupt member"  # a refused record keeps its place and its reason
    assert scorer.batches == [["a3", None], ["a3"], [None], ["b0", "b1"]]  # a placeholder closes unit a's batch
    err = capsys.readouterr().err
    assert err == ("warning: the model failed while streaming (CUDA out of memory. Tried to allocate 2.00 GiB); "
                   "going on batch by batch\n")


def test_a_reader_failing_part_way_ends_its_unit_only():
    def broken():
        yield Record(key="c0", id="c0", source="c", image=b"jpeg", caption="x")
        raise OSError("device went away")

    events = list(score_records(FlakyScorer(fail_at=99, bad=""), [(Shard(Path("c.tar"), "webdataset"), broken()),
                                                                   unit("d", ["d0"])], OPTS))
    assert [(e.shard.name, e.record and e.record.key) for e in events] == [("c", "c0"), ("c", None), ("d", "d0"),
                                                                         ("d", None)]
    assert "c.tar: cannot be read (OSError: device went away)" in events[1].failure and events[3].failure is None


def test_one_run_per_output_folder_and_share(tmp_path, capsys):
    write_webdataset(tmp_path / "in", 0, pairs(0, 2))
    write_webdataset(tmp_path / "in", 1, pairs(1, 2))
    out = tmp_path / "out"
    argv = ["--model", "demo", "--input", str(tmp_path / "in"), "--output", str(out), "--device", "cpu", "--quiet", "--batch-size", "2"]
    with output_lock(out):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: --output {out}: another run is writing it (pid ") and err.count("\n") == 1, err
    with output_lock(out, "1-of-2"):  # the other process of a two-way split
        assert main([*argv, "--shard-index", "1", "--num-shards", "2"]) == 1
        assert "another run is writing it" in capsys.readouterr().err
        assert main([*argv, "--shard-index", "0", "--num-shards", "2"]) == 0
    assert [p.name for p in sorted(out.iterdir())] == ["00000.aitqe.parquet"]
