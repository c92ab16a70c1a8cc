"""ONNX vision encoder: export and parity (tiny fixture, demo model), bundles that run it, the backend flag."""

from __future__ import annotations

import copy
import json

import onnx
import pytest
import torch

from quantize.__main__ import main as quantize_main
from quantize.vision import main as vision_main
from quantize.vision_onnx import MIN_COSINE, ExportCheckError, check_parity, compare_embeddings, export_onnx
from runtime.model.checkpoint import load_checkpoint
from runtime.demo import DEMO_MODEL
from runtime.errors import InputError
from runtime.formats.manifest import read_manifest
from runtime.image import load_image, preprocess
from runtime.model.vision import VisionEncoder
from runtime.score import main as score_main
from runtime.scorer import Scorer
from runtime.model.vision_onnx import OnnxVisionEncoder
from tests.conftest import altered_copy

CAPTION = "a big green square top right and a small red cross on the left"


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return load_checkpoint(tiny_ckpt)  # fp32


@pytest.fixture(scope="module")
def bundles(tiny_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("vision-bundles")
    out = {}
    for vision in ("onnx,torch", "onnx-fp16"):
        out[vision] = root / vision.replace(",", "-")
        assert quantize_main(["--model", str(tiny_ckpt), "--method", "bf16", "--vision", vision,
                              "--output", str(out[vision])]) == 0
    return out


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """dtype -> the tiny tower's ONNX file, exported once."""
    out = {}
    for dtype in ("fp32", "fp16"):
        folder = tmp_path_factory.mktemp(f"onnx-{dtype}")
        entry = export_onnx(tiny.vision, tiny.config.vision, tiny.config.image, folder, dtype, log=lambda _: None)
        assert entry.details["parity"]["cosine_min"] >= MIN_COSINE[dtype] and not entry.details["external_data"]
        out[dtype] = folder / entry.file
    return out


def pixels(scorer_or_spec, image_dir, n=3):
    spec = getattr(scorer_or_spec, "image_spec", scorer_or_spec)
    return preprocess([load_image(image_dir / f"img{i}.png").convert("RGB") for i in range(n)], spec)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_export_checks_and_parity(tiny, exported, image_dir, dtype):
    path = exported[dtype]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    weight_types = {t.data_type for t in model.graph.initializer if len(t.dims) == 2}
    assert weight_types == {onnx.TensorProto.FLOAT16 if dtype == "fp16" else onnx.TensorProto.FLOAT}
    x = pixels(tiny.config.image, image_dir)
    with torch.inference_mode():
        ref = tiny.vision(x)
    enc = OnnxVisionEncoder(path, "cpu", torch.float32)
    for batch in (x[:1], x):
        out = enc(batch)
        assert out.shape == ref[:len(batch)].shape and out.dtype == torch.float32
        assert compare_embeddings(ref[:len(batch)], out)["cosine_min"] >= MIN_COSINE[dtype]


def test_parity_failure_is_refused(tiny, exported):
    other = copy.deepcopy(tiny.vision)
    with torch.no_grad():
        other.projector[0].weight.add_(0.05 * torch.randn_like(other.projector[0].weight))
    with pytest.raises(ExportCheckError, match=r"differs from the PyTorch tower \(cosine"):
        check_parity(other, exported["fp32"], tiny.config.image, "fp32", log=lambda _: None)


def test_encoder_contract(exported, tmp_path):
    enc = OnnxVisionEncoder(exported["fp32"], "cpu", torch.bfloat16)
    s, t, h = enc.image_size, enc.tokens, enc.hidden
    assert enc(torch.zeros(2, 3, s, s)).dtype == torch.bfloat16
    assert enc(torch.zeros(0, 3, s, s)).shape == (0, t, h)
    with pytest.raises(InputError, match=r"expected \[B, 3, 64, 64\]"):
        enc(torch.zeros(1, 3, s + 1, s + 1))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="onnxruntime cannot load the vision encoder"):
        OnnxVisionEncoder(tmp_path / "junk.onnx")


def test_bundle_runs_the_onnx_tower_like_the_checkpoint(bundles, tiny_scorer, image_dir):
    manifest = read_manifest(bundles["onnx,torch"])
    assert [(v.format, v.dtype, v.file) for v in manifest.vision] == [("onnx", "fp32", "model.onnx"),
                                                                     ("torch", "bf16", None)]
    assert {"vision/model.onnx", "vision/model.safetensors"} <= set(manifest.files)
    scorer = Scorer.from_pretrained(bundles["onnx,torch"], device="cpu", dtype="fp32")
    assert isinstance(scorer.vision, OnnxVisionEncoder)
    x = pixels(scorer, image_dir)
    with torch.inference_mode():
        assert compare_embeddings(tiny_scorer.vision(x), scorer.vision(x))["cosine_min"] >= MIN_COSINE["fp32"]
    for i in range(3):
        image = image_dir / f"img{i}.png"
        assert scorer.score(image, CAPTION, output_all=True, max_new_tokens=16).raw_text == \
            tiny_scorer.score(image, CAPTION, output_all=True, max_new_tokens=16).raw_text


def test_backend_flag_switches_and_refuses(bundles, tiny_ckpt, image_dir, capsys):
    both = Scorer.from_pretrained(bundles["onnx,torch"], device="cpu", dtype="fp32", vision_backend="torch")
    assert isinstance(both.vision, VisionEncoder)
    fp16 = Scorer.from_pretrained(bundles["onnx-fp16"], device="cpu", dtype="fp32", vision_backend="onnx")
    assert isinstance(fp16.vision, OnnxVisionEncoder) and fp16.vision.path.name == "model-fp16.onnx"
    with pytest.raises(InputError, match="only in onnx format; use --vision-backend onnx"):
        Scorer.from_pretrained(bundles["onnx-fp16"], device="cpu", vision_backend="torch")
    with pytest.raises(InputError, match="is a checkpoint, whose vision tower runs in PyTorch"):
        Scorer.from_pretrained(tiny_ckpt, device="cpu", vision_backend="onnx")
    args = ["--image", str(image_dir / "img0.png"), "--caption", CAPTION, "--max-new-tokens", "4", "--device", "cpu"]
    assert score_main(args + ["--model", str(bundles["onnx-fp16"]), "--vision-backend", "torch"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --vision-backend torch:") and "\n" not in err
    assert score_main(args + ["--model", str(bundles["onnx,torch"]), "--vision-backend", "onnx"]) == 0
    assert json.loads(capsys.readouterr().out)["error"] is None


def test_altered_onnx_is_refused(bundles, tmp_path):
    bad = altered_copy(bundles["onnx-fp16"], tmp_path / "bad", "vision/model-fp16.onnx")
    with pytest.raises(InputError, match="vision/model-fp16.onnx was altered"):
        Scorer.from_pretrained(bad, device="cpu")


def test_cli_errors(tmp_path, capsys):
    assert vision_main(["--synthetic", "so1b", "--output", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.strip() == "error: --synthetic so1b: unknown shape; use one of so400m"
    with pytest.raises(SystemExit) as e:
        quantize_main(["--model", "x", "--method", "bf16", "--vision", "onnx,tflite", "--output", str(tmp_path / "b")])
    assert e.value.code == 2


def test_demo_tower_parity_fp32(tmp_path):
    ck = load_checkpoint(DEMO_MODEL)
    entry = export_onnx(ck.vision, ck.config.vision, ck.config.image, tmp_path, log=lambda _: None)
    assert entry.details["parity"]["cosine_min"] >= MIN_COSINE["fp32"] and entry.details["parity"]["images"] >= 4


def test_demo_fp16_bundle_gives_the_same_scores(tmp_path, capsys):
    """Only the tower differs: the bf16 bundle's backbone holds the checkpoint's bf16 weights, both run in fp32."""
    from bench.__main__ import main as bench_main

    bundle = tmp_path / "demo"
    assert quantize_main(["--model", str(DEMO_MODEL), "--method", "bf16", "--vision", "onnx-fp16",
                          "--output", str(bundle)]) == 0
    assert bench_main(["--reference", str(DEMO_MODEL), "--candidates", str(bundle), "--pairs", "demo:16",
                       "--output", str(tmp_path / "bench"), "--no-cost", "--no-plots"]) == 0
    r = json.loads((tmp_path / "bench" / "results.json").read_text())["variants"][1]
    assert r["accuracy"]["overall_agreement"] >= 15 / 16 and r["accuracy"]["json_valid"] == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and onnxruntime-gpu")
@pytest.mark.gpu
def test_cuda_io_binding(tiny, exported, image_dir):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    enc = OnnxVisionEncoder(exported["fp32"], "cuda", torch.bfloat16)
    assert enc.bind_device == "cuda"
    x = pixels(tiny.config.image, image_dir)
    out = enc(x.cuda())
    assert out.device.type == "cuda" and out.dtype == torch.bfloat16
    with torch.inference_mode():
        assert compare_embeddings(tiny.vision(x), out.float().cpu())["cosine_min"] >= 0.999


@pytest.mark.slow
def test_so400m_export(tmp_path):
    assert vision_main(["--synthetic", "so400m", "--output", str(tmp_path), "--no-latency"]) == 0
    assert (tmp_path / "model.onnx.data").stat().st_size > 1.5e9
