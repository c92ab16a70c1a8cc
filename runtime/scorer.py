"""`Scorer`: the Python API of the runtime. One image-caption pair or a batch in, verdicts out.

A batch goes through four stages, each a method: `prepare` (CPU: read and validate the image,
preprocess its pixels, tokenize the prompt), `encode` (vision tower + prompt embeddings), `decode`
(the engine, through the decode seam of `runtime.engine`) and `parse` (text -> verdict fields).
Per-pair input problems (unreadable image, caption that is not text) become an `error` in that
pair's verdict; the other pairs of the batch are still scored.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any, Callable

import torch
from PIL import Image
from tqdm import tqdm

from runtime import engine
from runtime.defaults import DEFAULT_MAX_NEW_TOKENS, default_device
from runtime.engine import Backbone, Decoded, Decoder, StopRule, upload
from runtime.errors import InputError
from runtime.formats import method
from runtime.formats.bundle import load_bundle
from runtime.image import ImageSpec
from runtime.model.checkpoint import DTYPES, Checkpoint, load_checkpoint
from runtime.model.config import Eos
from runtime.model.locate import kind_of
from runtime.parse import OVERALL_MARK, parse_output, to_dict
from runtime.pipeline import Pair, Prepared, Preparer, ahead, prepared
from runtime.scores import Scores

CUDA_WORKERS = 2  # image-reading processes by default on CUDA (`--workers`)
ENGINES = engine.names()  # the engines registered in runtime.engine (runtime.defaults.ENGINES, for parsers)


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


@dataclass
class Verdict:
    """The result for one pair: parsed fields, raw text, timings, and any error."""

    id: Any
    model: str
    overall_score: int | None = None
    overall_expected: float | None = None  # probability-weighted overall score (runtime.scores)
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
    """Runs AITQE: prepare -> encode (vision encoder + prompt embeddings) -> decode -> parse."""

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
    engine: str = "fast"  # a name registered in runtime.engine: which decoder to build when `decoder` is not given
    slots: int = 8  # rows decoded together
    compile: bool | None = None  # compile the decode step: None = where the engine may (the fast engine: on CUDA)
    compilable: bool = False  # the backbone's own answer to "may it compile" (its method's; a checkpoint's: yes)
    decoder: Decoder | None = None
    scores: Scores | None = field(init=False, default=None)  # what decoders observe: AITQE's scores

    def __post_init__(self):
        if self.engine not in engine.names():
            raise InputError(f"unknown engine {self.engine!r}; use one of {', '.join(engine.names())}")
        if self.decoder is None:
            self.decoder = engine.build(self.engine, Backbone(self.llm, self.tokenizer, self.pad_token_id,
                                                              self.slots, self.compile, self.compilable))
        self.engine = self.decoder.name
        self.scores = Scores.of(self.tokenizer)  # None without one-token digits: no expected scores

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | None = None, dtype: str | None = None,
                        trust_remote_code: bool = False, vision_backend: str | None = None,
                        engine: str = "fast", slots: int = 8, compile: bool | None = None,
                        threads: int | None = None, gpu_layers: int = 0) -> "Scorer":
        """Load an AITQE checkpoint folder or an aitqe-edge bundle (its manifest decides how), or a
        GGUF export, which llama.cpp runs (`runtime.gguf_scorer`: `threads`, `gpu_layers`, `slots`).

        dtype (bf16 | fp16 | fp32; default bf16 on CUDA, fp32 on CPU) applies to the 16-bit parts;
        a quantized backbone keeps its method's own storage and compute types.
        vision_backend (torch | onnx) overrides the bundle manifest's choice of vision encoder (a GGUF
        export: runs its own tower, on device in dtype, instead of clip.cpp).
        engine: fast (static KV cache, continuous batching over `slots` rows; `compile` its decode
        step, by default on CUDA for a dense backbone), reference (transformers' generate, static
        batches of `slots`), or any other engine registered in runtime.engine.
        """
        device = device or default_device()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
        dtype = dtype or ("bf16" if device.startswith("cuda") else "fp32")
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        if kind_of(path) == "gguf":
            from runtime.gguf_scorer import GgufScorer

            return GgufScorer.load(path, threads=threads, gpu_layers=gpu_layers, trust_remote_code=trust_remote_code,
                                   vision_backend=vision_backend, device=device, dtype=DTYPES[dtype], slots=slots)
        if kind_of(path) == "bundle":
            b = load_bundle(path, device=device, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                            vision_backend=vision_backend)
            m = b.manifest
            return cls(llm=b.llm, vision=b.vision, tokenizer=b.tokenizer, image_spec=m.image,
                       image_tokens=m.image_tokens, eos=m.eos, pad_token_id=m.pad_token_id,
                       model_id=Path(path).resolve().name, max_positions=b.llm.config.max_position_embeddings,
                       device=device, note=m.note, engine=engine, slots=slots, compile=compile,
                       compilable=method(m.backbone.method).compiles)
        if vision_backend not in (None, "torch"):
            raise InputError(f"--vision-backend {vision_backend}: {path} is a checkpoint, whose vision tower runs in "
                             f"PyTorch; make a bundle first: python -m quantize --model {path} --method bf16 "
                             f"--vision {vision_backend} --output BUNDLE")
        ck = load_checkpoint(path, dtype=DTYPES[dtype], device=device, trust_remote_code=trust_remote_code)
        return cls.from_checkpoint(ck, device, engine=engine, slots=slots, compile=compile)

    @classmethod
    def from_checkpoint(cls, ck: Checkpoint, device: str = "cpu", *, engine: str = "fast",
                        slots: int = 8, compile: bool | None = None) -> "Scorer":
        """A scorer over an already loaded AITQE checkpoint."""
        cfg = ck.config
        return cls(llm=ck.llm, vision=ck.vision, tokenizer=ck.tokenizer, image_spec=cfg.image,
                   image_tokens=cfg.image_tokens, eos=cfg.eos, pad_token_id=cfg.pad_token_id,
                   model_id=cfg.root.resolve().name, max_positions=cfg.llm.max_position_embeddings, device=device,
                   note=cfg.note, engine=engine, slots=slots, compile=compile, compilable=True)

    def score(self, image: str | Path | Image.Image, caption: str, *, output_all: bool = False,
              max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Verdict:
        return self.score_batch([Pair(image, caption)], output_all=output_all,
                                max_new_tokens=max_new_tokens)[0]

    # ---------------------------------------------------------------- the stages

    @property
    def preparer(self) -> Preparer:
        return Preparer(self.tokenizer, self.image_spec, self.image_tokens, self.max_positions)

    def prepare(self, pair: Pair, max_new_tokens: int) -> Prepared:
        """Validate one pair (CPU): its pixels and prompt ids, or InputError."""
        return self.preparer(pair, max_new_tokens)

    @torch.inference_mode()
    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings [B, T, H] of pixels [B, 3, S, S]."""
        return self.vision(upload(pixels, self.device))

    @torch.inference_mode()
    def encode(self, prepared: list[Prepared]) -> list[torch.Tensor]:
        """LLM input rows [T + L_i, H]: image embeddings first, then the prompt's token embeddings."""
        image_embeds = self.image_embeddings(torch.stack([p.pixels for p in prepared]))
        embed = self.llm.get_input_embeddings()
        return [torch.cat([img.to(embed.weight.dtype), embed(torch.tensor(p.ids, device=embed.weight.device))])
                for img, p in zip(image_embeds, prepared)]

    def decode(self, rows: list[torch.Tensor], *, output_all: bool, max_new_tokens: int,
               budgets: list[int] | None = None) -> Decoded:
        """Greedy new ids and text per row; stops at <Overall> unless output_all."""
        return self.decoder.decode(rows, self._stop(output_all), max_new_tokens, budgets, self.scores)

    def _stop(self, output_all: bool) -> StopRule:
        return StopRule(self.eos.ids, None if output_all else OVERALL_MARK)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    @staticmethod
    def parse(text: str, output_all: bool) -> dict:
        return to_dict(parse_output(text, output_all))

    # ---------------------------------------------------------------- all of them

    @torch.inference_mode()
    def score_batch(self, pairs: list[Pair], *, output_all: bool = False,
                    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[Verdict]:
        """Score pairs together (one forward batch); bad pairs get an error, the rest are scored."""
        start = time.perf_counter()
        ready = list(prepared(self.preparer, pairs, max_new_tokens))
        return self._score_prepared(ready, output_all, max_new_tokens, time.perf_counter() - start)

    def score_stream(self, pairs: Iterable[Pair], *, batch_size: int = 8, workers: int | None = 0,
                     output_all: bool = False, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Iterator[Verdict]:
        """One verdict per pair, in input order, for a stream of any length. `workers` processes prepare
        pairs ahead of the model (0: in this process; None: CUDA_WORKERS on CUDA, where the card would
        wait on images, else 0); at least two batches are in flight; the vision tower runs on `batch_size` pairs at a
        time; the engine decodes `slots` rows together (the fast engine with continuous batching, the
        reference engine in static batches)."""
        if workers is None:
            workers = CUDA_WORKERS if self.device.startswith("cuda") else 0
        stream = prepared(self.preparer, pairs, max_new_tokens, workers, window=2 * batch_size)
        done: dict[int, Verdict] = {}  # finished out of order, waiting for their turn
        flight: dict[int, tuple[Verdict, Prepared, float]] = {}

        def chunks() -> Iterator[tuple[int, list[Verdict], list, list, float]]:  # in a thread, one chunk ahead
            index = 0
            while chunk := list(islice(stream, batch_size)):
                verdicts, ready = self._verdicts(chunk)
                start = time.perf_counter()
                embeds = self.encode([r for _, _, r in ready]) if ready else []
                self._sync()
                yield index, verdicts, ready, embeds, time.perf_counter() - start
                index += len(chunk)

        def rows() -> Iterator[tuple[int, torch.Tensor, int]]:
            for index, verdicts, ready, embeds, seconds in ahead(chunks()):
                done.update((index + k, v) for k, v in enumerate(verdicts) if v.error)
                for (k, v, r), e in zip(ready, embeds):
                    flight[index + k] = (v, r, seconds)
                    yield index + k, e, r.budget

        turn = 0
        with torch.inference_mode():
            for i, f in self.decoder.stream(rows(), self._stop(output_all), self.scores):
                v, prep, encode_seconds = flight.pop(i)
                self._fill(v, prep, f.text, f.expected, output_all)
                v.timings = {"batch_size": self.decoder.slots, "encode_ms": round(1000 * encode_seconds, 2),
                             "prefill_ms": round(1000 * f.prefill_seconds, 2),
                             "decode_ms": round(1000 * f.seconds, 2), "new_tokens": len(f.ids)}
                done[i] = v
                while turn in done:
                    yield done.pop(turn)
                    turn += 1
        while turn in done:  # pairs refused after the last scored one
            yield done.pop(turn)
            turn += 1

    def _verdicts(self, chunk: list[tuple[Pair, Prepared | InputError]]
                  ) -> tuple[list[Verdict], list[tuple[int, Verdict, Prepared]]]:
        """A verdict per pair, refused ones with their error; and (position, verdict, prepared) of the rest."""
        verdicts = [Verdict(id=p.id, model=self.model_id, note=self.note) for p, _ in chunk]
        ready = []
        for k, (v, (_, r)) in enumerate(zip(verdicts, chunk)):
            if isinstance(r, InputError):
                v.error = str(r)
            else:
                ready.append((k, v, r))
        return verdicts, ready

    def _fill(self, v: Verdict, prep: Prepared, text: str, expected: dict[str, float], output_all: bool) -> None:
        """A verdict's fields from its row's decoded text and expected scores."""
        parsed = self.parse(text, output_all)
        v.overall_score, v.recaption = parsed["overall_score"], parsed["recaption"]
        v.overall_explanation, v.sub_scores = parsed["overall_explanation"], parsed["sub_scores"]
        v.parse_error, v.raw_text, v.caption_truncated = parsed["parse_error"], text, prep.truncated
        v.overall_expected = _rounded(expected.get("Overall"))
        for name, sub in v.sub_scores.items():
            sub["expected"] = _rounded(expected.get(name))

    def _score_prepared(self, chunk: list[tuple[Pair, Prepared | InputError]], output_all: bool,
                        max_new_tokens: int, prepare_seconds: float) -> list[Verdict]:
        verdicts, ready = self._verdicts(chunk)
        if not ready:
            return verdicts
        encode_start = time.perf_counter()
        rows = self.encode([r for _, _, r in ready])
        self._sync()  # the vision tower's time counts here, not in the prefill
        decode_start = time.perf_counter()
        decoded = self.decode(rows, output_all=output_all, max_new_tokens=max_new_tokens,
                              budgets=[r.budget for _, _, r in ready])
        timings = {"batch_size": len(ready), "prepare_ms": round(1000 * prepare_seconds, 2),
                   "encode_ms": round(1000 * (decode_start - encode_start), 2),
                   "prefill_ms": round(1000 * decoded.prefill_seconds, 2),
                   "decode_ms": round(1000 * decoded.seconds, 2), "decode_steps": decoded.steps}
        for (_, v, prep), text, ids, e in zip(ready, decoded.texts, decoded.ids, decoded.expected):
            self._fill(v, prep, text, e, output_all)
            v.timings = {**timings, "new_tokens": len(ids)}
        return verdicts

    def score_many(self, pairs: list[Pair], *, batch_size: int, output_all: bool = False,
                   max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, desc: str | None = None,
                   quiet: bool = False) -> list[Verdict]:
        """score_batch over consecutive batches of `pairs`, with a progress bar on stderr."""
        out = []
        for i in tqdm(range(0, len(pairs), batch_size), desc=desc, disable=quiet, file=sys.stderr, leave=False):
            out += self.score_batch(pairs[i:i + batch_size], output_all=output_all, max_new_tokens=max_new_tokens)
        return out
