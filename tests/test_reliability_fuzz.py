"""Fuzz (hypothesis): any pairs file gives one record per line, no traceback, in bounded time; any
config value gives a checked config or a one-line InputError, never another exception, and never
a model whose sizes differ from its weights."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import InputError
from runtime.model.checkpoint import check_sizes, weight_files
from runtime.model.config import load_config
from runtime.model.sizes import header_shapes
from runtime.data.jsonl import read_jsonl
from runtime.data.jsonl_output import RecordWriter, done_lines

GOLDEN = Path(__file__).parent / "data" / "faithfulness" / "checkpoint"
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
pair_object = st.fixed_dictionaries({}, optional={"id": json_value, "image": st.one_of(st.just("a.png"), json_value),
                                                  "caption": json_value}).map(json.dumps)
nested = st.integers(1, 5000).map(lambda n: "[" * n + "]" * n)
raw_line = st.one_of(pair_object, nested, st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" ")),
                     st.sampled_from(["", "   ", "\t", "{", '{"id": "\\ud800", "image": "a", "caption": "c"}',
                                      '{"id": 1e999}', "9" * 5000, "\ufeff{}"]))


def as_bytes(line) -> bytes:
    return line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")


@FUZZ
@given(lines=st.lists(raw_line, max_size=12), final_newline=st.booleans())
def test_any_pairs_file_gives_one_record_per_line(tmp_path_factory, lines, final_newline):
    folder = tmp_path_factory.mktemp("fuzz")
    data = b"\n".join(as_bytes(line) for line in lines) + (b"\n" if final_newline and lines else b"")
    (folder / "pairs.jsonl").write_bytes(data)
    expected = len(data.splitlines()) if b"\r" not in data else None
    start = time.perf_counter()
    rows = list(read_jsonl(folder / "pairs.jsonl"))
    if expected is not None:
        assert [r.line for r in rows] == list(range(1, expected + 1))
    assert all((r.error is None) == (r.image is not None and r.caption is not None) for r in rows)
    writer = RecordWriter(folder / "out.jsonl")
    writer.write([{"id": r.id, "line": r.line, "error": r.error} for r in rows])
    writer.close()
    assert done_lines(folder / "out.jsonl") == {r.line for r in rows}
    assert time.perf_counter() - start < 2


SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")
config_value = st.one_of(st.integers(-10, 10 ** 12), st.floats(allow_nan=True), st.booleans(), st.none(),
                         st.text(max_size=6), st.lists(st.integers(), max_size=3), st.integers(0, 256))


@settings(max_examples=120, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(llm=st.dictionaries(st.sampled_from(SHAPE_FIELDS + ("num_attention_heads", "num_key_value_heads",
                                                          "max_position_embeddings", "rms_norm_eps",
                                                          "rope_theta", "pad_token_id", "eos_token_id")),
                           config_value, max_size=3),
       vision=st.dictionaries(st.sampled_from(("hidden_size", "num_hidden_layers", "num_attention_heads",
                                               "image_size", "patch_size", "intermediate_size")),
                              config_value, max_size=2))
def test_any_config_value_is_checked_or_refused_in_one_line(tmp_path_factory, llm, vision):
    root = tmp_path_factory.mktemp("cfg") / "ck"
    shutil.copytree(GOLDEN, root)
    original = json.loads((GOLDEN / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**original, **llm}))
    vis_original = json.loads((GOLDEN / "siglip" / "config.json").read_text())
    (root / "siglip" / "config.json").write_text(json.dumps({**vis_original, **vision}))
    start = time.perf_counter()
    try:
        cfg = load_config(root)
        check_sizes(cfg, header_shapes(weight_files(root)), root)
    except InputError as e:
        assert "\n" not in str(e) and str(e)
    else:  # accepted: the sizes that decide what is built are the weights' own
        assert all(getattr(cfg.llm, k) == original[k] for k in SHAPE_FIELDS)
        assert all(getattr(cfg.vision, k) == vis_original[k] for k in ("hidden_size", "num_hidden_layers",
                                                                         "image_size", "patch_size",
                                                                         "intermediate_size"))
    assert time.perf_counter() - start < 3


@settings(max_examples=20, deadline=20000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(raw_line, min_size=1, max_size=6))
def test_any_pairs_file_through_the_cli_gives_one_record_per_line(tmp_path_factory, capsys, lines):
    from PIL import Image

    from runtime.score import main

    folder = tmp_path_factory.mktemp("cli")
    Image.new("RGB", (20, 20), (0, 90, 200)).save(folder / "a.png")
    data = b"\n".join(as_bytes(line).replace(b"\r", b" ") for line in lines) + b"\n"
    (folder / "pairs.jsonl").write_bytes(data)
    out = folder / "out.jsonl"
    rc = main(["--model", "demo", "--input", str(folder / "pairs.jsonl"), "--output", str(out), "--quiet", "--max-new-tokens", "2",
               "--batch-size", "3"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in records] == list(range(1, data.count(b"\n") + 1))
