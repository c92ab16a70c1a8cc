"""What a GGUF export (`quantize.gguf`) is made from, loaded as one `Checkpoint` in its stored dtype:
an AITQE checkpoint folder, or a 16-bit bundle of `python -m quantize` (bf16, fp16: a method whose
matrices keep their plain shapes), whose language model, PyTorch vision tower and tokenizer are
exactly what the bundle holds, so a bf16 bundle of a bf16 checkpoint gives the checkpoint's GGUF
tensor for tensor (its metadata too, but `general.name` and `tokenizer.ggml.bos_token_id`: a bundle
keeps no BOS id, unused anyway as AITQE's prompt has none). A quantized bundle (bnb-*, gptq-*, fp8)
is refused in one line: llama.cpp's quantizer starts from 16-bit weights, which such a bundle no
longer has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import SiglipVisionConfig

from runtime.errors import InputError
from runtime.formats import method
from runtime.formats.bundle import load_backbone, load_vision, read_config
from runtime.formats.manifest import read_manifest, verify
from runtime.launch.model import model_fingerprint
from runtime.model.checkpoint import Checkpoint, fingerprint, load_checkpoint, load_tokenizer, stored_dtype
from runtime.model.config import AITQEConfig, load_config
from runtime.model.locate import locate


@dataclass
class Source:
    ck: Checkpoint
    dtype: torch.dtype  # the language model's stored dtype (what is kept without loss)
    record: dict        # the export manifest's `source`


def load_source(path: str | Path) -> Source:
    """The checkpoint folder or 16-bit bundle at `path`, or a one-line InputError."""
    path = Path(path)
    name = path.resolve().name
    if locate(path).kind == "checkpoint":
        cfg = load_config(path)
        dtype = stored_dtype(cfg)
        return Source(load_checkpoint(path, dtype=dtype), dtype, {"name": name, "fingerprint": fingerprint(path)})
    return _bundle(path, name)


def _bundle(root: Path, name: str) -> Source:
    manifest = read_manifest(root)
    how = manifest.backbone.method
    if not method(how).plain_shapes:
        raise InputError(f"--model {root}: a {how} bundle holds a quantized language model, and llama.cpp's "
                         "quantizer starts from 16-bit weights; export the checkpoint folder the bundle came from "
                         "(or a bf16 bundle)")
    entry = manifest.torch_vision(f"--model {root}", "clip.cpp's mmproj is written from")
    verify(root, manifest)
    llm = load_backbone(root, manifest, "cpu", None)  # as stored
    vision_cfg = SiglipVisionConfig.from_dict(read_config(root / entry.path / "config.json"))
    vision = load_vision(root, entry, llm.config.hidden_size, "cpu", None, (manifest.image.size, manifest.image_tokens))
    backbone = root / manifest.backbone.path
    cfg = AITQEConfig(root=backbone, raw=read_config(backbone / "config.json"), llm=llm.config, vision=vision_cfg,
                      image=manifest.image, vision_config_source=f"{entry.path}/config.json",
                      image_tokens=manifest.image_tokens, eos=manifest.eos, pad_token_id=manifest.pad_token_id,
                      note=manifest.note)
    ck = Checkpoint(cfg, load_tokenizer(root / "tokenizer"), llm, vision, image_newline=None)  # unused by GGUF
    record = {"name": name, "fingerprint": model_fingerprint(root), "bundle": how,
              "checkpoint_fingerprint": manifest.source.fingerprint}
    return Source(ck, next(llm.parameters()).dtype, record)
