"""A `Scorer` over a GGUF export (`python -m quantize.export --format gguf`): llama.cpp runs it.

The same four stages as any scorer, with llama.cpp's parts: `prepare` squashes each image to the
tower's S x S with PIL (uint8 [S, S, 3]: clip.cpp's own resize would letterbox it) and tokenizes the
prompt with the export's `tokenizer/` (runtime.prompt: our ids, never the GGUF's tokenizer);
`encode` runs clip.cpp's vision tower and projector (the mmproj GGUF) and makes `Prompted` rows
(image embeddings, prompt ids); `decode` is the `llama.cpp` engine (runtime.engine.gguf). The
manifest (`aitqe_gguf.json`) gives the image spec, image tokens, end-of-generation and pad ids.

With `vision_backend` (torch | onnx), our own vision tower exported beside the GGUFs
(`quantize.export --format gguf --with-vision`, the manifest's `vision`, loaded as a bundle's tower
is: `runtime.formats.bundle.load_vision`) runs instead: pairs are prepared as for any torch scorer
(normalized pixels), and its embeddings are fed to llama.cpp as input embeddings (a `llama_batch`
with `embd`); the mmproj is then not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from runtime.engine import Prompted
from runtime.engine.gguf import NAME, LlamaCppDecoder
from runtime.engine.llama_cpp import LlamaCppModel, read_manifest
from runtime.errors import InputError
from runtime.formats.bundle import load_vision
from runtime.formats.manifest import Vision, relative_path
from runtime.image import ImageSpec, resized
from runtime.model.checkpoint import load_tokenizer
from runtime.model.config import Eos
from runtime.pipeline import Prepared, Preparer
from runtime.scorer import Scorer


@dataclass(frozen=True)
class SquashedPreparer(Preparer):
    """Prepares pairs for clip.cpp: pixels uint8 [S, S, 3], squashed with PIL, not yet normalized."""

    def pixels(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(resized(image, self.image_spec).copy())


@dataclass
class GgufScorer(Scorer):
    """A scorer whose vision tower is clip.cpp and whose decoder is llama.cpp (`model`)."""

    model: LlamaCppModel | None = None

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None, gpu_layers: int = 0,
             trust_remote_code: bool = False, vision_backend: str | None = None, device: str = "cpu",
             dtype: torch.dtype = torch.float32, slots: int = 1) -> "GgufScorer":
        """Load a GGUF export: `threads` for llama.cpp and clip.cpp (default: theirs), `gpu_layers`
        language-model layers offloaded by a CUDA/Metal build of llama-cpp-python (0: none; -1: all);
        `vision_backend` (torch | onnx): our own tower exported beside it, on `device` in `dtype`,
        instead of clip.cpp; `slots` rows decoded together on llama.cpp's parallel sequences."""
        path = Path(path)
        m = read_manifest(path)
        image = m["image"]
        spec = ImageSpec(image["size"], tuple(image["mean"]), tuple(image["std"]), image["resample"], image["rescale"])
        vision = None if vision_backend is None else _tower(path, m, vision_backend, device, dtype)
        model = LlamaCppModel.from_export(path, mmproj=vision is None, n_threads=threads, n_gpu_layers=gpu_layers)
        tokenizer = load_tokenizer(path / m["files"]["tokenizer"], trust_remote_code)
        return cls(llm=None, vision=vision, tokenizer=tokenizer, image_spec=spec, image_tokens=m["image_tokens"],
                   eos=Eos(tuple(m["eos"]["ids"]), m["eos"]["source"]), pad_token_id=m["pad_token_id"],
                   model_id=path.resolve().name, max_positions=min(m["max_positions"], model.n_ctx),
                   device=device, note=m.get("note"), engine=NAME, slots=slots,
                   decoder=LlamaCppDecoder(model, tokenizer, slots), model=model)

    @property
    def preparer(self) -> Preparer:
        if self.vision is not None:  # our own tower: normalized pixels, as every torch scorer
            return super().preparer
        return SquashedPreparer(self.tokenizer, self.image_spec, self.image_tokens, self.max_positions)

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings [B, T, H]: of normalized pixels [B, 3, S, S] by our own tower,
        or of squashed pixels uint8 [B, S, S, 3] by clip.cpp."""
        if self.vision is not None:
            return super().image_embeddings(pixels)
        return torch.from_numpy(np.stack([self.model.image_embeddings(p.numpy()) for p in pixels]))

    def encode(self, prepared: list[Prepared]) -> list[Prompted]:
        """Rows for llama.cpp: each pair's image embeddings and its prompt ids."""
        images = self.image_embeddings(torch.stack([p.pixels for p in prepared]))
        return [Prompted(img.float().cpu().numpy(), p.ids) for img, p in zip(images, prepared)]


def _tower(path: Path, manifest: dict, backend: str, device: str, dtype: torch.dtype):
    """The export's own vision tower in format `backend`, or a one-line InputError saying how to add it."""
    entry = next((v for v in manifest.get("vision", []) if v["format"] == backend), None)  # version 1 had none
    if entry is None:
        raise InputError(f"--vision-backend {backend}: {path} holds no {backend} vision tower (clip.cpp runs its "
                         f"mmproj without this option); export it again with python -m quantize.export --format gguf "
                         f"--with-vision {backend}")
    relative_path(entry["path"], "vision.path")
    return load_vision(path, Vision(**entry), manifest["hidden_size"], device, dtype,
                       (manifest["image"]["size"], manifest["image_tokens"]))
