"""The bundle format: the typed manifest (round trip, refusals), the method registry, and each
method's synthetic variant, the GPTQ one held to the folder GPTQModel itself writes."""

from __future__ import annotations

import dataclasses
import json

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
