"""`Scorer`: the Python API of the runtime. One image-caption pair or a batch in, verdicts out.

Per-pair input problems (unreadable image, empty caption) become an `error` in that pair's
verdict; the other pairs of the batch are still scored.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from tqdm import tqdm

from runtime.bundle import is_bundle, load_bundle
from runtime.checkpoint import DTYPES, Checkpoint, load_checkpoint
from runtime.config import Eos
from runtime.errors import InputError
from runtime.generate import greedy_generate
from runtime.image import ImageSpec, load_image, preprocess
from runtime.parse import parse_output, to_dict
from runtime.prompt import prompt_ids

DEFAULT_MAX_NEW_TOKENS = 384


@dataclass
class Pair:
    image: str | Path | Image.Image
    caption: str
    id: Any = None


@dataclass
class Verdict:
    """The result for one pair: parsed fields, raw text, timings, and any error."""

    id: Any
    model: str
    overall_score: int | None = None
    recaption: str | None = None
    overall_explanation: str | None = None
    sub_scores: dict = field(default_factory=dict)
    raw_text: str | None = None
    caption_truncated: bool = False
    parse_error: str | None = None
    error: str | None = None
    timings: dict = field(default_factory=dict)
    note: str | None = None

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        if d["note"] is None:
            del d["note"]
        return d


@dataclass
class Scorer:
    """Runs AITQE: vision encoder -> prompt embeddings -> greedy decoding -> parsed verdict."""

    llm: torch.nn.Module
    vision: Callable[[torch.Tensor], torch.Tensor]  # pixels [B,3,S,S] -> embeddings [B,T,H]
    tokenizer: Any
    image_spec: ImageSpec
    image_tokens: int
    eos: Eos  # the ids that end generation, and the file they came from
    pad_token_id: int
    model_id: str
    max_positions: int
    device: str = "cpu"
    note: str | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | None = None, dtype: str | None = None,
                        trust_remote_code: bool = False, vision_backend: str | None = None) -> "Scorer":
        """Load an AITQE checkpoint folder or an aitqe-edge bundle (its manifest decides how).

        dtype (bf16 | fp16 | fp32; default bf16 on CUDA, fp32 on CPU) applies to the 16-bit parts;
        a quantized backbone keeps its method's own storage and compute types.
        vision_backend (torch | onnx) overrides the bundle manifest's choice of vision encoder.
        """
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
        dtype = dtype or ("bf16" if device.startswith("cuda") else "fp32")
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        if is_bundle(path):
            b = load_bundle(path, device=device, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                            vision_backend=vision_backend)
            m = b.manifest
            return cls(llm=b.llm, vision=b.vision, tokenizer=b.tokenizer, image_spec=b.image_spec,
                       image_tokens=m["image_tokens"], eos=Eos(tuple(m["eos"]["ids"]), m["eos"]["source"]),
                       pad_token_id=m["pad_token_id"], model_id=Path(path).resolve().name,
                       max_positions=b.llm.config.max_position_embeddings, device=device, note=m.get("note"))
        if vision_backend not in (None, "torch"):
            raise InputError(f"--vision-backend {vision_backend}: {path} is a checkpoint, whose vision tower runs in "
                             f"PyTorch; make a bundle first: python -m quantize --model {path} --method bf16 "
                             f"--vision {vision_backend} --output BUNDLE")
        ck = load_checkpoint(path, dtype=DTYPES[dtype], device=device, trust_remote_code=trust_remote_code)
        return cls.from_checkpoint(ck, device)

    @classmethod
    def from_checkpoint(cls, ck: Checkpoint, device: str = "cpu") -> "Scorer":
        """A scorer over an already loaded AITQE checkpoint."""
        cfg = ck.config
        return cls(llm=ck.llm, vision=ck.vision, tokenizer=ck.tokenizer, image_spec=cfg.image,
                   image_tokens=cfg.image_tokens, eos=cfg.eos,
                   pad_token_id=cfg.pad_token_id, model_id=cfg.root.resolve().name,
                   max_positions=cfg.llm.max_position_embeddings, device=device,
                   note=(cfg.raw.get("aitqe_edge_demo") or {}).get("note"))

    def score(self, image: str | Path | Image.Image, caption: str, *, output_all: bool = False,
              max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Verdict:
        return self.score_batch([Pair(image, caption)], output_all=output_all,
                                max_new_tokens=max_new_tokens)[0]

    def prepare(self, pair: Pair, max_new_tokens: int) -> tuple[Image.Image, list[int], bool]:
        """Validate one pair: its RGB image and prompt ids, or InputError."""
        budget = self.max_positions - self.image_tokens - max_new_tokens
        prompt = prompt_ids(self.tokenizer, pair.caption, budget)
        image = pair.image if isinstance(pair.image, Image.Image) else load_image(pair.image)
        return image.convert("RGB"), prompt.ids, prompt.truncated

    @torch.inference_mode()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        """Projected image embeddings [B, T, H] of RGB images."""
        return self.vision(preprocess(images, self.image_spec).to(self.device))

    @torch.inference_mode()
    def embed_prompts(self, images: list[Image.Image], prompts: list[list[int]]) -> list[torch.Tensor]:
        """LLM input rows [T + L_i, H]: image embeddings first, then the prompt's token embeddings."""
        image_embeds = self.image_embeddings(images)
        embed = self.llm.get_input_embeddings()
        return [torch.cat([img.to(embed.weight.dtype), embed(torch.tensor(ids, device=embed.weight.device))])
                for img, ids in zip(image_embeds, prompts)]

    @torch.inference_mode()
    def score_batch(self, pairs: list[Pair], *, output_all: bool = False,
                    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[Verdict]:
        """Score pairs together (one forward batch); bad pairs get an error, the rest are scored."""
        verdicts = [Verdict(id=p.id, model=self.model_id, note=self.note) for p in pairs]
        ready = []
        for v, p in zip(verdicts, pairs):
            try:
                ready.append((v, *self.prepare(p, max_new_tokens)))
            except InputError as e:
                v.error = str(e)
        if not ready:
            return verdicts
        start = time.perf_counter()
        rows = self.embed_prompts([r[1] for r in ready], [r[2] for r in ready])
        embed_s = time.perf_counter() - start
        gen = greedy_generate(self.llm, self.tokenizer, rows, eos_ids=self.eos.ids,
                              pad_token_id=self.pad_token_id, max_new_tokens=max_new_tokens,
                              output_all=output_all)
        for (v, _, _, truncated), text, ids in zip(ready, gen.texts, gen.ids):
            parsed = to_dict(parse_output(text, output_all))
            v.overall_score, v.recaption = parsed["overall_score"], parsed["recaption"]
            v.overall_explanation, v.sub_scores = parsed["overall_explanation"], parsed["sub_scores"]
            v.parse_error, v.raw_text, v.caption_truncated = parsed["parse_error"], text, truncated
            v.timings = {"batch_size": len(ready), "embed_ms": round(1000 * embed_s, 2),
                         "generate_ms": round(1000 * gen.seconds, 2), "new_tokens": len(ids)}
        return verdicts

    def score_many(self, pairs: list[Pair], *, batch_size: int, output_all: bool = False,
                   max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, desc: str | None = None,
                   quiet: bool = False) -> list[Verdict]:
        """score_batch over consecutive batches of `pairs`, with a progress bar on stderr."""
        out = []
        for i in tqdm(range(0, len(pairs), batch_size), desc=desc, disable=quiet, file=sys.stderr, leave=False):
            out += self.score_batch(pairs[i:i + batch_size], output_all=output_all, max_new_tokens=max_new_tokens)
        return out
