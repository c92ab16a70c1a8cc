"""The exports behind `python -m quantize.export` (the command: quantize/export.py): an AITQE
checkpoint or GPTQ bundle -> a standard LLaVA folder, or a checkpoint -> a GGUF export for llama.cpp.

`--format gguf` is `quantize.gguf` (imported only then): a Qwen2 GGUF, a clip.cpp mmproj GGUF, the
tokenizer and `aitqe_gguf.json` (`--with-vision`: our own vision tower beside them, which
`runtime.score --vision-backend` runs instead of clip.cpp); `python -m runtime.score --model DIR`
runs it on llama.cpp. It is made from a checkpoint folder or a bf16/fp16 bundle (a quantized
bundle is refused: export the checkpoint it came from).

The folder loads with transformers' `LlavaForConditionalGeneration` and `AutoProcessor` (no custom
code) and, being in the llava-hf layout, with vLLM and SGLang. Its processor's chat template and
tokenizer give the runtime's exact prompt ids; `aitqe_export.json` records the source, the image
placeholder (and whether it took a spare embedding row), the prompt and the stop string.

From a bundle of `python -m quantize`: a gptq-* bundle keeps its GPTQ language model as it is
(`quantization_config` at top level, vision tower and projector unquantized and excluded through
GPTQ's `dynamic` rule); a bf16/fp16 bundle exports like a checkpoint. A bundle holds no last SigLIP
layer (dead at inference: AITQE reads `hidden_states[-2]`), so that layer is written as zeros,
with `vision_use_head` off. bitsandbytes bundles are refused (engines quantize those at load
time: export the checkpoint instead). The folder is written atomically, never over an existing
one without --force; --force replaces only an export whose folder holds nothing but the files its
`aitqe_export.json` lists (`files`), and never follows a symbolic link.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GenerationConfig, Qwen2Config, SiglipVisionConfig
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from quantize.export import FORMATS
from quantize.outputs import check_output
from quantize.llava import (IMAGE_TOKEN, STOP_STRING, export_tokenizer, llava_config, llava_name, padded,
                            processor, prompt_text, refuse_unmappable)
from runtime.atomic import atomic_folder
from runtime.errors import InputError
from runtime.formats.manifest import read_manifest, verify
from runtime.model.checkpoint import iter_tensors, load_tokenizer, stored_dtype, weight_files
from runtime.model.config import load_config
from runtime.model.locate import EXPORT_INFO, locate

SHARD_BYTES = 4 << 30
VISION_EXCLUDED = "-:.*(vision_tower|multi_modal_projector).*"  # GPTQ `dynamic`: these modules stay unquantized


class ShardWriter:
    """Tensors -> model.safetensors, or shards of ~SHARD_BYTES with an index (never all in RAM)."""

    def __init__(self, folder: Path):
        self.folder, self.current, self.size, self.shards, self.total = folder, {}, 0, [], 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.current and self.size + nbytes > SHARD_BYTES:
            self._flush()
        self.current[name] = tensor.contiguous()
        self.size += nbytes
        self.total += nbytes

    def _flush(self) -> None:
        path = self.folder / f"model-part{len(self.shards) + 1}.safetensors"
        save_file(self.current, str(path), metadata={"format": "pt"})
        self.shards.append((path, list(self.current)))
        self.current, self.size = {}, 0

    def close(self) -> None:
        self._flush()
        if len(self.shards) == 1:
            self.shards[0][0].rename(self.folder / "model.safetensors")
            return
        n, weight_map = len(self.shards), {}
        for i, (path, names) in enumerate(self.shards):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            path.rename(self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        (self.folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": self.total}, "weight_map": weight_map}, indent=2))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _finish(out: Path, *, cfg, tokenizer, spec, eos: list[int], pad: int, info: dict) -> None:
    """config.json, generation_config.json, the processor and tokenizer files, aitqe_export.json."""
    cfg.save_pretrained(str(out))
    GenerationConfig(eos_token_id=eos, pad_token_id=pad, do_sample=False).save_pretrained(str(out))
    processor(tokenizer, spec, cfg.vision_config.patch_size).save_pretrained(str(out))
    # Names transformers 4.x and 5.x (and so vLLM, SGLang) both read: the plain fast tokenizer class, and the
    # added special tokens as the list 4.x expects (5.x writes `extra_special_tokens`, a dict in 4.x).
    tok_cfg = out / "tokenizer_config.json"
    d = json.loads(tok_cfg.read_text())
    d["additional_special_tokens"] = d.pop("extra_special_tokens", None) or [IMAGE_TOKEN]
    tok_cfg.write_text(json.dumps({**d, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2, ensure_ascii=False))
    # 4.x reads the image processor from its own file; 5.x nests it in processor_config.json.
    image = json.loads((out / "processor_config.json").read_text())["image_processor"]
    (out / "preprocessor_config.json").write_text(json.dumps({**image, "processor_class": "LlavaProcessor"}, indent=2))
    # 4.x spellings beside 5.x's: without rope_theta, 4.x's Qwen2 would silently use its default 10000.
    config = json.loads((out / "config.json").read_text())
    text = config["text_config"]
    text.update(rope_theta=text["rope_parameters"]["rope_theta"], torch_dtype=config["dtype"])
    (out / "config.json").write_text(json.dumps({**config, "torch_dtype": config["dtype"]}, indent=2))
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False))


def _info(source: str, kind: str, image_id: int, how: str, eos: list[int], note: str | None) -> dict:
    return {"format": "llava-hf", "source": source, "source_kind": kind, "image_token": IMAGE_TOKEN,
            "image_token_id": image_id, "image_token_row": how, "prompt": prompt_text("{caption}"),
            "stop_string": STOP_STRING, "eos_token_ids": eos, "note": note}


def export_checkpoint(src: Path, out: Path) -> dict:
    """An AITQE checkpoint folder (released layout) -> llava-hf folder `out`."""
    try:
        raw = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raw = None  # load_config says what is wrong with it
    if isinstance(raw, dict):
        refuse_unmappable(raw, str(src / "config.json"))
    cfg = load_config(src)
    tokenizer, image_id, how = export_tokenizer(load_tokenizer(src), cfg.llm.vocab_size)
    vocab = max(cfg.llm.vocab_size, image_id + 1)
    dtype = stored_dtype(cfg)
    writer = ShardWriter(out)
    for name, tensor in iter_tensors(weight_files(src)):
        target = llava_name(name)
        if target is None:
            continue
        if target.startswith("?"):
            raise InputError(f"{src}: tensor {name!r} has no LLaVA equivalent; this is not an AITQE checkpoint")
        if target in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
            tensor = padded(tensor, vocab)
        writer.add(target, tensor)
        if target == "multi_modal_projector.linear_2.weight":
            writer.add("multi_modal_projector.linear_2.bias", tensor.new_zeros(tensor.shape[0]))
    writer.close()
    llava = llava_config(cfg.llm, cfg.vision, image_token_id=image_id, image_tokens=cfg.image_tokens,
                         vocab_size=vocab, eos=list(cfg.eos.ids), pad=cfg.pad_token_id, dtype=_dtype_name(dtype))
    info = _info(str(src), "checkpoint", image_id, how, list(cfg.eos.ids), cfg.note)
    _finish(out, cfg=llava, tokenizer=tokenizer, spec=cfg.image, eos=list(cfg.eos.ids), pad=cfg.pad_token_id,
            info=info)
    return info


def _dead_last_layer(vision: SiglipVisionConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A SigLIP encoder layer whose weights are zero (layer norms' scales one): it stands in for the
    last layer a bundle does not hold; LLaVA computes it and discards it (feature layer -2)."""
    layer = SiglipEncoderLayer(vision)
    return {k: (torch.ones_like(v) if k.endswith("layer_norm1.weight") or k.endswith("layer_norm2.weight")
                else torch.zeros_like(v)).to(dtype) for k, v in layer.state_dict().items()}


def export_bundle(src: Path, out: Path) -> dict:
    """A dense or GPTQ bundle of `python -m quantize` -> llava-hf folder `out`."""
    manifest = read_manifest(src)
    method = manifest.backbone.method
    if method.startswith("bnb-"):
        raise InputError(f"{src}: a {method} bundle cannot be exported (bitsandbytes is quantized at load time by "
                         "transformers and vLLM); export the 16-bit checkpoint it was made from instead")
    entry = manifest.torch_vision(str(src), "LLaVA needs")
    verify(src, manifest)
    backbone = json.loads((src / manifest.backbone.path / "config.json").read_text())
    refuse_unmappable(backbone, str(src / manifest.backbone.path / "config.json"))
    llm = Qwen2Config(**{k: v for k, v in backbone.items() if k not in ("quantization_config", "architectures", "auto_map")})
    vision = SiglipVisionConfig.from_json_file(src / entry.path / "config.json")
    vision.vision_use_head = False
    tokenizer, image_id, how = export_tokenizer(load_tokenizer(src / "tokenizer"), llm.vocab_size)
    vocab = max(llm.vocab_size, image_id + 1)
    writer, dtype = ShardWriter(out), None
    for path in weight_files(src / manifest.backbone.path):
        for name, tensor in iter_tensors([path]):
            if name.endswith(("embed_tokens.weight", "lm_head.weight")):
                tensor = padded(tensor, vocab)
                dtype = tensor.dtype
            writer.add("language_model." + name, tensor)  # model.* and lm_head.weight
    with safe_open(str(src / entry.path / "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            tensor = f.get_tensor(name)
            if name.startswith("projector."):
                linear = {"0": "linear_1", "2": "linear_2"}[name.split(".")[1]]
                writer.add(f"multi_modal_projector.{linear}.{name.rsplit('.', 1)[1]}", tensor)
                if name == "projector.2.weight":
                    writer.add("multi_modal_projector.linear_2.bias", tensor.new_zeros(tensor.shape[0]))
            else:
                writer.add("vision_tower.vision_model." + name, tensor)
        vdtype = f.get_tensor("embeddings.patch_embedding.weight").dtype
    last = vision.num_hidden_layers - 1
    for name, tensor in _dead_last_layer(vision, vdtype).items():
        writer.add(f"vision_tower.vision_model.encoder.layers.{last}.{name}", tensor)
    writer.add("vision_tower.vision_model.post_layernorm.weight", torch.ones(vision.hidden_size, dtype=vdtype))
    writer.add("vision_tower.vision_model.post_layernorm.bias", torch.zeros(vision.hidden_size, dtype=vdtype))
    writer.close()
    llava = llava_config(llm, vision, image_token_id=image_id, image_tokens=manifest.image_tokens, vocab_size=vocab,
                         eos=list(manifest.eos.ids), pad=manifest.pad_token_id,
                         dtype=_dtype_name(dtype or torch.float16))
    quant = backbone.get("quantization_config")
    if quant is not None:
        llava.quantization_config = {**quant, "dynamic": {**quant.get("dynamic", {}), VISION_EXCLUDED: {}}}
    info = _info(str(src), f"bundle ({method})", image_id, how, list(manifest.eos.ids), manifest.note)
    if quant is not None:
        info["quantized"] = (f"language model only ({method}); vision tower and projector unquantized, "
                             f"excluded by the GPTQ rule dynamic {VISION_EXCLUDED!r}")
    info["vision_last_layer"] = "zeros: the bundle holds no last SigLIP layer (unused: feature layer -2)"
    _finish(out, cfg=llava, tokenizer=tokenizer, spec=manifest.image, eos=list(manifest.eos.ids),
            pad=manifest.pad_token_id, info=info)
    return info


def export(src: str | Path, out: str | Path, *, fmt: str = "llava-hf", force: bool = False) -> dict:
    """Export `src` (checkpoint folder or bundle) to `out`, atomically; the export's info, whose
    `files` lists every file written (what a later --force may replace)."""
    src, out = Path(src), Path(out)
    if fmt not in FORMATS[:1]:
        raise InputError(f"--format {fmt}: unknown; use one of {', '.join(FORMATS)}")
    source = locate(src)
    check_output(out, force)
    with atomic_folder(out) as tmp:
        info = export_bundle(src, tmp) if source.kind == "bundle" else export_checkpoint(src, tmp)
        info["files"] = sorted({p.name for p in tmp.iterdir()} | {EXPORT_INFO})
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False))
    return info


def export_gguf_folder(src: str, out: str, type: str, force: bool, threads: int, vision: tuple[str, ...]) -> int:
    """`--format gguf`: quantize.gguf's export of a checkpoint folder or 16-bit bundle, said in one line."""
    from quantize.gguf import export_gguf

    done = export_gguf(src, out, type, force=force, threads=threads, vision=vision)
    sizes = ", ".join(f"{done.manifest['files'][k]} {v / 2**20:.2f} MiB" for k, v in done.bytes.items())
    print(f"wrote {done.output}: {sizes}; {done.seconds:.1f}s")
    return 0
