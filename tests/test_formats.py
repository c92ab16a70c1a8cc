"""The bundle format: the typed manifest (round trip, refusals), the method registry, and each
method's synthetic variant, the GPTQ one held to the folder GPTQModel itself writes."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from safetensors import safe_open

from quantize.backbone import CalibrationOptions
from quantize.bundle import build_bundle
from runtime.errors import InputError
from runtime.formats import METHODS, method
from runtime.formats.manifest import FORMAT_VERSION, read_manifest
from runtime.scorer import Scorer

CAPTION = "a big green square top right and a small red cross on the left"


def tensors(folder) -> dict:
    out = {}
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            t = f.get_slice(name)
            out[name] = (tuple(t.get_shape()), t.get_dtype())
    return out


@pytest.fixture(scope="module")
def gptq_pairs(tiny_ckpt, tmp_path_factory):
    """bits -> (a bundle GPTQModel quantized, the synthetic variant), group size 32."""
    root = tmp_path_factory.mktemp("gptq")
    out = {}
    for bits in (4, 8):
        cfg = dataclasses.replace(method(f"gptq-int{bits}").config(), group_size=32)
        real = build_bundle(tiny_ckpt, f"gptq-int{bits}", cfg, root / f"real{bits}",
                            calibration=CalibrationOptions(calibration_samples=8))
        synthetic = build_bundle(tiny_ckpt, f"gptq-int{bits}", cfg, root / f"syn{bits}", synthetic=True)
        out[bits] = (root / f"real{bits}", root / f"syn{bits}", real, synthetic)
    return out


@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_synthetic_variant_has_gptqmodels_format(gptq_pairs, image_dir, bits):
    real, syn, real_manifest, syn_manifest = gptq_pairs[bits]
    assert tensors(real / "backbone") == tensors(syn / "backbone")
    keys = ("bits", "group_size", "sym", "desc_act", "quant_method", "checkpoint_format")
    qreal, qsyn = (json.loads((b / "backbone" / "config.json").read_text())["quantization_config"] for b in (real, syn))
    assert {k: qreal[k] for k in keys} == {k: qsyn[k] for k in keys}
    assert real_manifest.calibration is not None and syn_manifest.calibration is None
    assert syn_manifest.backbone.params["synthetic"] == "random codes"
    scorer = Scorer.from_pretrained(syn, device="cpu")
    v = scorer.score(image_dir / "img0.png", CAPTION, output_all=True, max_new_tokens=6)
    assert v.error is None and v.timings["new_tokens"] >= 1


def test_manifest_round_trip_and_refusals(gptq_pairs, tmp_path):
    real, _, written, _ = gptq_pairs[4]
    assert read_manifest(real) == written
    assert written.calibration.count == 8 and len(written.calibration.pair_ids) == 8
    raw = json.loads((real / "manifest.json").read_text())
    for name, edit, message in (
            ("old", lambda d: d.update(format_version=FORMAT_VERSION - 1), "this version reads"),
            ("nofiles", lambda d: d.pop("files"), "malformed"),
            ("other", lambda d: d.update(format="x"), "not an aitqe-edge-bundle"),
            ("notjson", None, "unreadable")):
        (tmp_path / name).mkdir()
        if edit is None:
            (tmp_path / name / "manifest.json").write_text("{")
        else:
            d = json.loads(json.dumps(raw))
            edit(d)
            (tmp_path / name / "manifest.json").write_text(json.dumps(d))
        with pytest.raises(InputError, match=message) as e:
            read_manifest(tmp_path / name)
        assert "\n" not in str(e.value)


def test_unknown_method_is_refused():
    with pytest.raises(InputError, match="backbone method 'awq' is unknown"):
        method("awq")
    assert all(callable(m.config) and m.config() is not None for m in METHODS.values())


def test_a_name_registers_once():
    from runtime.formats import register

    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(method("bf16")))
    assert register(method("bf16")) is method("bf16")  # the same method again: nothing changes
    assert method("bf16").compiles and not method("gptq-int4").compiles and method("fp16").plain_shapes


def test_locate_says_what_is_at_a_path(tmp_path, tiny_ckpt):
    from runtime.model.locate import check_replaceable, locate

    assert locate(tiny_ckpt).kind == "checkpoint"
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "aitqe_export.json").write_text("{}")
    (tmp_path / "file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    for name, words in (("missing", "not a folder (nothing is there)"), ("file", "not a folder (a file)"),
                        ("export", "a LLaVA export"), ("other", "no config.json or manifest.json")):
        with pytest.raises(InputError, match=re.escape(words)) as e:
            locate(tmp_path / name)
        assert str(e.value).startswith(f"--model {tmp_path / name}: ") and "\n" not in str(e.value)
    with pytest.raises(InputError, match="already exists; pass --force"):
        check_replaceable(tmp_path / "other", "bundle", "a bundle", force=False)
    with pytest.raises(InputError, match="exists and is not a bundle"):
        check_replaceable(tmp_path / "other", "bundle", "a bundle", force=True)
    check_replaceable(tmp_path / "missing", "bundle", "a bundle", force=False)


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    from runtime.atomic import atomic_folder

    final = tmp_path / "out"
    with atomic_folder(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(final) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (final / "a").read_text() == "1"
    with atomic_folder(final) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in final.iterdir()] == ["b"]


def test_atomic_folder_refuses_a_symbolic_link_and_leaves_its_target(tmp_path):
    from runtime.atomic import atomic_folder

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("the user's")
    (tmp_path / "out").symlink_to(tmp_path / "real")
    with pytest.raises(InputError, match="symbolic link"):
        with atomic_folder(tmp_path / "out") as tmp:
            (tmp / "a").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "real"] and (tmp_path / "out").is_symlink()
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["keep.txt"]
