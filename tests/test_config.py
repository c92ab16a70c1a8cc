"""config.json and generation_config.json read as the original AITQE code reads them.

Expected values are the original's: its MMConfig defaults (modeling_mm.py) and the end-of-generation
id that its `generate` (transformers 4.41.2) used on each variant of the golden checkpoint, as
observed by running the original code on these same variants.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from runtime.model.config import load_config
from runtime.errors import InputError
from runtime.score import main

GOLDEN = Path(__file__).parent / "data" / "faithfulness" / "checkpoint"


def variant(tmp_path: Path, name: str, *, generation: dict | None, edit=None) -> Path:
    """A copy of the golden checkpoint with its own generation_config.json (None: none) and config edits."""
    root = tmp_path / name
    shutil.copytree(GOLDEN, root)
    for f in root.rglob("*"):
        f.chmod(f.stat().st_mode | stat.S_IWUSR)
    raw = json.loads((root / "config.json").read_text())
    if edit:
        edit(raw)
    (root / "config.json").write_text(json.dumps(raw))
    gen = root / "generation_config.json"
    if generation is None:
        gen.unlink()
    else:
        gen.write_text(json.dumps(generation))
    return root


# (generation_config.json, config.json edit, eos ids the original stopped on, source named)
EOS_CASES = {
    "generation config wins": ({"eos_token_id": 5}, None, (5,), "generation_config.json"),
    "no generation config": (None, None, (765,), "config.json"),
    "neither names one": (None, lambda c: c.pop("eos_token_id"), (2,), "MMConfig default"),
    "legacy rule: config.json takes over": ({"_from_model_config": True, "eos_token_id": 5},
                                            lambda c: c.update(top_k=20), (765,), "config.json"),
    "legacy rule: nothing to take over": ({"_from_model_config": True, "eos_token_id": 5}, None, (5,),
                                          "generation_config.json"),
    "a list": ({"eos_token_id": [5, 765]}, None, (5, 765), "generation_config.json"),
    "none at all": ({"bos_token_id": 1}, None, (), "generation_config.json"),
}


@pytest.mark.parametrize("name", EOS_CASES)
def test_end_of_generation_resolved_as_the_original(tmp_path, name):
    generation, edit, ids, source = EOS_CASES[name]
    eos = load_config(variant(tmp_path, "v", generation=generation, edit=edit)).eos
    assert eos.ids == ids
    assert eos.source.startswith(source)


def test_settings_that_change_greedy_decoding_are_refused(tmp_path):
    root = variant(tmp_path, "rep", generation={"eos_token_id": 765, "repetition_penalty": 1.05})
    with pytest.raises(InputError, match="repetition_penalty=1.05 would change greedy decoding"):
        load_config(root)
    sampling_only = variant(tmp_path, "sampling", generation={"eos_token_id": 765, "do_sample": True,
                                                              "temperature": 0.7, "top_p": 0.8})
    assert load_config(sampling_only).eos.ids == (765,)  # the original passes do_sample=False


def test_eos_outside_the_vocabulary_is_one_line_error(tmp_path):
    root = variant(tmp_path, "big", generation={"eos_token_id": 10**6})
    with pytest.raises(InputError, match="not a token id of the 768-token vocabulary"):
        load_config(root)


def test_missing_fields_take_the_originals_mmconfig_defaults(tmp_path):
    keys = ("rms_norm_eps", "rope_theta", "num_key_value_heads", "max_position_embeddings", "hidden_act")
    cfg = load_config(variant(tmp_path, "d", generation={}, edit=lambda c: [c.pop(k) for k in keys])).llm
    assert (cfg.rms_norm_eps, cfg.rope_parameters["rope_theta"], cfg.num_key_value_heads,
            cfg.max_position_embeddings, cfg.hidden_act) == (1e-5, 10000.0, 32, 4096, "silu")


def test_missing_shape_field_fails_at_the_weights(tmp_path, capsys):
    root = variant(tmp_path, "s", generation={}, edit=lambda c: c.pop("num_key_value_heads"))
    rc = main(["--model", str(root), "--image", str(GOLDEN.parent / "images" / "f_exact_56x56.png"),
               "--caption", "x", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error:") and "does not match the config" in err[0]


def test_rope_scaling_is_refused_not_ignored(tmp_path):
    root = variant(tmp_path, "r", generation={}, edit=lambda c: c.update(rope_scaling={"type": "linear",
                                                                                       "factor": 2.0}))
    with pytest.raises(InputError, match="rope_scaling"):
        load_config(root)


def test_debug_flag_says_which_end_of_generation_id_is_used(capsys):
    rc = main(["--model", str(GOLDEN), "--image", str(GOLDEN.parent / "images" / "f_exact_56x56.png"),
               "--caption", "x", "--device", "cpu", "--max-new-tokens", "2", "--debug"])
    out, err = capsys.readouterr()
    assert rc == 0 and json.loads(out)["error"] is None
    assert "end of generation: token ids [765] from generation_config.json" in err


def test_preprocessor_config_that_the_tower_cannot_take_is_refused(tmp_path):
    for name, edit, message in (("size", {"size": {"height": 64, "width": 64}}, "differs from the vision config"),
                                ("norm", {"do_normalize": False}, "do_normalize false is not supported")):
        root = variant(tmp_path, name, generation={})
        proc = root / "siglip" / "preprocessor_config.json"
        proc.write_text(json.dumps({**json.loads(proc.read_text()), **edit}))
        with pytest.raises(InputError, match=message):
            load_config(root)
