"""Export AITQE's vision encoder (SigLIP cut at hidden_states[-2] + projector) to ONNX, validated.

pixels [B, 3, S, S] (dynamic batch) -> embeddings [B, T, H]. Every step uses a maintained tool:
  1. `torch.onnx.export(dynamo=True)` (opset 18) with its onnxscript graph optimizer;
  2. onnxscript's onnxruntime fusions (`ort_fusions.optimize_for_ort`): attention, SkipLayerNorm
     and GELU become onnxruntime contrib ops, so the file is meant for onnxruntime;
  3. fp16: onnxruntime's float16 converter (`OnnxModel.convert_float_to_float16`), fp32 inputs and
     outputs kept, then a topological sort;
  4. saved with onnx-ir; weights go to an external `<file>.data` above EXTERNAL_DATA_BYTES (so400m
     fp32 is ~1.7 GB, near protobuf's 2 GB limit).
Validation (printed; any failure raises ExportCheckError): onnx.checker (full check), an onnxruntime
session, and parity with the PyTorch fp32 tower on random pixels and real images (demo-world
scenes and examples/*.png), run at two batch sizes: the smallest per-image cosine similarity must
reach MIN_COSINE[dtype]; max abs and relative L2 errors are reported.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from transformers import SiglipVisionConfig

from runtime.model.config import SO400M_VISION
from runtime.errors import InputError
from runtime.formats.manifest import Vision
from runtime.image import ImageSpec, preprocess
from runtime.model.vision import VisionEncoder
from runtime.model.vision_onnx import OnnxVisionEncoder

OPSET = 18
EXTERNAL_DATA_BYTES = 256 * 2**20
MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999}
SYNTHETIC = {"so400m": (SO400M_VISION, 3584)}  # published SigLIP so400m-patch14-384, Qwen2-7B hidden
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class ExportCheckError(InputError):
    """The export failed, or its graph does not check or does not reproduce the PyTorch tower."""


def synthetic_tower(name: str, seed: int = 0) -> tuple[VisionEncoder, SiglipVisionConfig, ImageSpec]:
    """A random-weight tower of a published shape (`SYNTHETIC`), for export timing and parity."""
    if name not in SYNTHETIC:
        raise InputError(f"--synthetic {name}: unknown shape; use one of {', '.join(SYNTHETIC)}")
    vis, llm_hidden = SYNTHETIC[name]
    cfg = SiglipVisionConfig(**vis)
    torch.manual_seed(seed)
    return VisionEncoder(cfg, llm_hidden).eval(), cfg, ImageSpec(size=cfg.image_size)


def sample_pixels(spec: ImageSpec, n_random: int = 2, n_world: int = 2, n_files: int = 2) -> torch.Tensor:
    """Parity inputs: random pixels in the processor's range, demo-world scenes, example files."""
    from runtime.demo.world import make_example

    images = [make_example(1000, i).image.convert("RGB") for i in range(n_world)]
    images += [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("*.png"))[:n_files]]
    gen = torch.Generator().manual_seed(0)
    rand = torch.rand((n_random, 3, spec.size, spec.size), generator=gen) * 2 - 1
    return torch.cat([rand, preprocess(images, spec)])


def compare_embeddings(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """min per-image cosine, max abs error, relative L2 error of out against ref."""
    ref, out = ref.double().flatten(1), out.double().flatten(1)
    return {"cosine_min": torch.nn.functional.cosine_similarity(ref, out, dim=1).min().item(),
            "max_abs_err": (out - ref).abs().max().item(),
            "rel_l2_err": ((out - ref).norm() / ref.norm()).item(), "images": ref.shape[0]}


def check_parity(enc: VisionEncoder, path: Path, spec: ImageSpec, dtype: str, log: Callable = print) -> dict:
    """Run the ONNX file with onnxruntime (CPU) against the fp32 torch tower; ExportCheckError if off."""
    x = sample_pixels(spec)
    with torch.inference_mode():
        ref = enc(x)
    ort_enc = OnnxVisionEncoder(path, "cpu", torch.float32)
    out = torch.cat([ort_enc(x[:1]), ort_enc(x[1:])])  # batch 1 and batch N: the batch axis is dynamic
    stats = compare_embeddings(ref, out)
    log(f"parity {dtype} vs PyTorch fp32 on {stats['images']} images (random + real): cosine min "
        f"{stats['cosine_min']:.8f}, max abs err {stats['max_abs_err']:.3g}, rel L2 err {stats['rel_l2_err']:.3g}")
    if not stats["cosine_min"] >= MIN_COSINE[dtype]:
        raise ExportCheckError(f"{path.name}: ONNX {dtype} output differs from the PyTorch tower (cosine "
                          f"{stats['cosine_min']:.6f} < {MIN_COSINE[dtype]}); not usable, report it or use --vision torch")
    return stats


@contextlib.contextmanager
def quiet_exporter():
    """Silence the exporter's notes that concern other models (torchvision ops, pytree deprecations)."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        log.setLevel(level)


def check_graph(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportCheckError(f"{path}: onnx.checker refused the exported graph "
                               f"({str(e).strip().splitlines()[0][:300]}); report it, or use --vision torch") from e


def export_onnx(enc: VisionEncoder, vision_cfg: SiglipVisionConfig, spec: ImageSpec, out: Path,
                dtype: str = "fp32", log: Callable = print) -> Vision:
    """Write out/<model|model-fp16>.onnx (+ .data) and out/config.json; the manifest's vision entry.

    `enc` is cast to fp32 in place (the reference for parity) and run on the CPU.
    """
    import onnx_ir as ir
    from onnxruntime.transformers.onnx_model import OnnxModel
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    if dtype not in MIN_COSINE:
        raise InputError(f"ONNX dtype {dtype!r}: use fp32 or fp16")
    start = time.perf_counter()
    enc = enc.float().cpu().eval()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(vision_cfg.to_json_string())
    x = torch.zeros(2, 3, spec.size, spec.size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with quiet_exporter():
            program = torch.onnx.export(enc, (x,), dynamo=True, opset_version=OPSET, optimize=True, verbose=False,
                                        input_names=["pixel_values"], output_names=["image_embeds"],
                                        dynamic_shapes={"pixel_values": {0: batch}})
    except Exception as e:  # the exporter raises many types; the user needs the first line and a way out
        raise ExportCheckError(f"torch.onnx.export failed on the vision tower ({type(e).__name__}: "
                               f"{str(e).strip().splitlines()[0][:300]}); use --vision torch") from e
    model, fusions = optimize_for_ort(program.model)
    del program
    if dtype == "fp16":
        om = OnnxModel(ir.to_proto(model))
        om.convert_float_to_float16(keep_io_types=True)
        om.topological_sort()
        model = ir.from_proto(om.model)
    name = "model.onnx" if dtype == "fp32" else f"model-{dtype}.onnx"
    path = out / name
    weights = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    external = weights > EXTERNAL_DATA_BYTES
    ir.save(model, path, external_data=f"{name}.data" if external else None)
    del model
    try:
        check_graph(path)
        export_s = time.perf_counter() - start
        log(f"exported {path} ({dtype}, opset {OPSET}, {weights / 2**20:.1f} MiB of weights"
            f"{', external data' if external else ''}) in {export_s:.1f}s, peak memory {peak_rss_gib():.2f} GiB; "
            "fused: " + ", ".join(f"{k} {v}" for k, v in fusions.items() if v) + "; onnx.checker: ok")
        parity = check_parity(enc, path, spec, dtype, log)
    except ExportCheckError:
        path.unlink()
        Path(f"{path}.data").unlink(missing_ok=True)
        raise
    return Vision(format="onnx", dtype=dtype, path=out.name, file=name, details={
        "opset": OPSET, "input": "pixel_values", "output": "image_embeds", "external_data": external,
        "image_size": spec.size, "tokens": (spec.size // vision_cfg.patch_size) ** 2,
        "hidden": enc.projector[2].out_features, "parity": parity, "export_s": round(export_s, 1)})


def per_image_ms(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, reps: int) -> float:
    """Median wall time of fn(x) over reps runs (after one warm-up), per image, in ms."""
    fn(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2] / x.shape[0]


@torch.inference_mode()
def latency(enc: VisionEncoder, path: Path, spec: ImageSpec, batches: tuple[int, ...], reps: int,
            log: Callable = print) -> dict:
    """CPU latency per image: onnxruntime vs the PyTorch fp32 tower, same thread count."""
    ort_enc = OnnxVisionEncoder(path, "cpu", torch.float32)
    out = {}
    for b in batches:
        x = torch.rand(b, 3, spec.size, spec.size) * 2 - 1
        out[b] = {"torch_ms": per_image_ms(enc, x, reps), "onnxruntime_ms": per_image_ms(ort_enc, x, reps)}
        log(f"CPU latency, batch {b}, {torch.get_num_threads()} threads: PyTorch fp32 {out[b]['torch_ms']:.1f} "
            f"ms/image, onnxruntime {path.name} {out[b]['onnxruntime_ms']:.1f} ms/image")
    return out


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
