"""An AITQE checkpoint or 16-bit bundle -> a GGUF pair for llama.cpp (`python -m quantize.export --format gguf
--type T [--with-vision torch,onnx] ...`).

DIR gets a Qwen2 language-model GGUF (`quantize.gguf_text`), a clip.cpp mmproj GGUF
(`quantize.gguf_vision`), the source tokenizer (the prompt is fed as the runtime's own token ids:
a GGUF keeps neither Qwen2's NFC normalizer nor "special-token strings are text"), and
`aitqe_gguf.json`, the manifest that says what the folder is. The source is a checkpoint folder or
a bf16/fp16 bundle (`quantize.gguf_source`: the same GGUF as from its checkpoint when the bundle
kept the checkpoint's dtype). `vision` adds our own vision tower beside the GGUFs, in the bundle's
layout (`quantize.vision`: `vision-torch/` in the source's stored dtype, `vision-onnx/` fp32),
listed in the manifest's `vision`; `python -m runtime.score --model DIR --vision-backend torch|onnx`
then feeds its embeddings to llama.cpp instead of clip.cpp's. Both GGUFs are written with the PyPI
`gguf` package; Q8_0 and Q4_K_M are made by llama.cpp's own quantizer (`llama_model_quantize` of
llama-cpp-python) from a lossless intermediate. The mmproj is F32 for `--type f32`, else F16.

Types: f32, f16 (plain conversion), q8_0, q4_k_m (need `pip install 'aitqe-edge[llama]'`).
Every file is written under a temporary name and renamed; the manifest comes last, so a folder
with a manifest is complete.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from gguf import GGMLQuantizationType, LlamaFileType

from quantize import gguf_text, gguf_vision
from quantize.gguf_source import load_source
from quantize.gguf_file import BF16, F16, F32, storage_kind, write_gguf
from quantize.outputs import check_output
from runtime.atomic import atomic_folder, atomic_path
from runtime.engine.llama_cpp import FORMAT, MANIFEST, VERSION, llama_cpp_module
from runtime.errors import InputError
from runtime.model.checkpoint import Checkpoint
from runtime.model.config import AITQEConfig

TOKENIZER = "tokenizer"
VISION = ("torch", "onnx")  # our own towers an export may hold beside the mmproj
# --type -> (llama.cpp file type, made by llama.cpp's quantizer)
TYPES = {"f32": (LlamaFileType.ALL_F32, False), "f16": (LlamaFileType.MOSTLY_F16, False),
         "q8_0": (LlamaFileType.MOSTLY_Q8_0, True), "q4_k_m": (LlamaFileType.MOSTLY_Q4_K_M, True)}
FILE_TYPE = {F32: LlamaFileType.ALL_F32, F16: LlamaFileType.MOSTLY_F16, BF16: LlamaFileType.MOSTLY_BF16}


@dataclass
class GgufExport:
    output: Path
    manifest: dict
    bytes: dict[str, int]  # per file of the manifest
    seconds: float


def quantize_with_llama_cpp(source: Path, dest: Path, file_type: LlamaFileType, threads: int) -> None:
    """llama.cpp's own quantizer (llama-quantize's code) from one GGUF to another."""
    llama_cpp = llama_cpp_module()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = int(file_type), threads
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params))
    if rc != 0:
        raise InputError(f"llama.cpp's quantizer failed ({file_type.name}, code {rc}); "
                         "run with a smaller --type or report the checkpoint's shapes")


def _write_language_model(ck: Checkpoint, path: Path, name: str, kind: GGMLQuantizationType,
                          quantized: LlamaFileType | None, threads: int) -> None:
    """The qwen2 GGUF in `kind`; with `quantized`, staged in `kind` and then quantized by llama.cpp."""
    with atomic_path(path) as tmp:
        staged = tmp.with_name(tmp.name + f".{kind.name.lower()}") if quantized else tmp
        try:
            write_gguf(staged, gguf_text.ARCH, gguf_text.metadata(ck, name, int(FILE_TYPE[kind])),
                       gguf_text.tensors(ck, kind))
            if quantized:
                quantize_with_llama_cpp(staged, tmp, quantized, threads)
        finally:
            if quantized:
                staged.unlink(missing_ok=True)


def _manifest(cfg: AITQEConfig, type: str, source: dict, files: dict, mm_kind: GGMLQuantizationType,
              vision: list[dict]) -> dict:
    """What `--model DIR` needs to know of the export (aitqe_gguf.json)."""
    spec = cfg.image
    manifest = {
        "format": FORMAT, "version": VERSION, "type": type,
        "source": source,
        "files": files, "language_model_type": type.upper(), "mmproj_type": mm_kind.name,
        "image": {"size": spec.size, "mean": list(spec.mean), "std": list(spec.std), "resample": spec.resample,
                  "rescale": spec.rescale},
        "image_tokens": cfg.image_tokens, "hidden_size": cfg.llm.hidden_size, "vocab_size": cfg.llm.vocab_size,
        "max_positions": cfg.llm.max_position_embeddings,
        "eos": {"ids": list(cfg.eos.ids), "source": cfg.eos.source}, "pad_token_id": cfg.pad_token_id,
        "prompt": "image embeddings, then the runtime's own prompt ids (runtime.prompt, tokenizer/); "
                  "images squashed to size x size with PIL and handed over as RGB",
        "vision": vision,
    }
    if cfg.note:
        manifest["note"] = cfg.note
    return manifest


def export_gguf(source: str | Path, output: str | Path, type: str = "f16", *, force: bool = False,
                threads: int = 0, vision: tuple[str, ...] = ()) -> GgufExport:
    """Write the GGUF pair, the tokenizer and the manifest of checkpoint or 16-bit bundle `source` into
    folder `output`, and our own vision tower in each format of `vision` (torch, onnx). threads: for
    llama.cpp's quantizer (0: all cores). One-line InputError for what cannot be mapped."""
    start = time.perf_counter()
    if type not in TYPES:
        raise InputError(f"unknown GGUF type {type!r}; use one of {', '.join(TYPES)}")
    unknown = [v for v in vision if v not in VISION]
    if unknown:
        raise InputError(f"--with-vision {unknown[0]}: unknown; use {' or '.join(VISION)} (or both: torch,onnx)")
    file_type, by_llama = TYPES[type]
    if by_llama:
        llama_cpp_module()  # refuse before any work when llama-cpp-python is missing
    source, output = Path(source), Path(output)
    if output.resolve() == source.resolve():
        raise InputError("--output is the source folder itself; pass a new folder")
    check_output(output, force)  # before the (possibly long) load
    src = load_source(source)
    ck, cfg, name = src.ck, src.ck.config, src.record["name"]
    gguf_text.check_llm(ck)
    gguf_vision.check_vision(ck)
    llm_kind = F32 if type == "f32" else F16 if type == "f16" else storage_kind(src.dtype)
    mm_kind = F32 if type == "f32" else F16
    files = {"language_model": f"{name}-{type}.gguf", "mmproj": f"mmproj-{name}-{mm_kind.name.lower()}.gguf",
             "tokenizer": TOKENIZER, **{f"vision_{v}": f"vision-{v}" for v in vision}}
    with atomic_folder(output) as tmp:
        _write_language_model(ck, tmp / files["language_model"], name, llm_kind, file_type if by_llama else None,
                              threads)
        write_gguf(tmp / files["mmproj"], gguf_vision.ARCH, gguf_vision.metadata(ck, name, int(FILE_TYPE[mm_kind])),
                   gguf_vision.tensors(ck, mm_kind))
        ck.tokenizer.save_pretrained(str(tmp / TOKENIZER))
        towers = _towers(ck, tmp, sorted(vision, key=VISION.index), src.dtype)  # after the mmproj: ONNX casts to fp32
        manifest = _manifest(cfg, type, src.record, files, mm_kind, towers)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    sizes = {k: sum(f.stat().st_size for f in (output / v).rglob("*") if f.is_file()) if (output / v).is_dir()
             else (output / v).stat().st_size for k, v in files.items()}
    return GgufExport(output, manifest, sizes, time.perf_counter() - start)


def _towers(ck: Checkpoint, folder: Path, formats: list[str], dtype: torch.dtype) -> list[dict]:
    """Our vision tower in each format (torch: the stored dtype, lossless; onnx: fp32), the manifest's
    `vision` entries (as a bundle's: format, dtype, path, file)."""
    from quantize.vision import export_vision

    stored = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    return [dataclasses.asdict(export_vision(ck, folder / f"vision-{f}", f, stored if f == "torch" else "fp32"))
            for f in formats]
