"""llama.cpp as an AITQE engine: a GGUF export (`quantize.gguf`) run through llama-cpp-python.

Faithful driving, as measured against the original AITQE code: the image comes first as embeddings
(either the runtime's own torch tower's, or clip.cpp's from the mmproj, handed the runtime's
PIL-squashed S x S RGB pixels: clip.cpp's own resize letterboxes non-square images), then the
runtime's own prompt ids (runtime.prompt: no BOS, two separate "\\n" tokens, NFC, special-token
strings as text), then greedy decoding (first maximum, as torch's argmax) with the caller's
end-of-generation ids, token budget and stop rule. llama.cpp's tokenizer and samplers are never used.

Options: n_threads, n_gpu_layers (a CUDA/Metal build of llama-cpp-python offloads that many layers),
n_ctx (positions; default the model's trained context, at most MAX_CTX), kv_f32 (an F32 KV cache; by
default for an F32 model, else F16), flash_attn (off by default: llama.cpp's CPU flash attention
rounds the queries to F16, which flipped 6 of the 35 golden cases' near-tied greedy picks),
cpu_repack (llama.cpp's repacked CPU weight layouts, AMX among them: faster for quantized models, off
by default because a CPU that advertises AMX without the kernel granting it dies with SIGILL).
`branch` evaluates another token in place of a chosen one on a spare sequence sharing the KV
cache, during `generate` or after it (`branch_logits`, while the row's cache is still there): what
the probability-weighted score needs for its "1" branch (runtime.scores). `probs` keeps, per step,
only the full-softmax probabilities of a few ids (what an observer reads), not the whole logits.
`set_lanes(n)` remakes the context with n parallel sequences (n x n_ctx KV cells, one spare
sequence for branches) for `generate_many`, which decodes n rows together (`runtime.engine.llama_lanes`).
"""

from __future__ import annotations

import ctypes
import json
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.engine.llama_lanes import Generation, Request, run, softmax_at
from runtime.engine.llama_lib import llama_cpp_module
from runtime.errors import InputError
from runtime.model.locate import GGUF_INFO as MANIFEST

__all__ = ["Generation", "LlamaCppModel", "Request", "llama_cpp_module", "softmax_at"]

FORMAT, VERSION = "aitqe-gguf", 1
MAX_LANES = 64  # rows decoded together at most (llama.cpp allows 256 sequences)
MAX_CTX = 4096  # default context: the model's trained one, at most this (AITQE needs ~729 + 100 + 384)


def read_manifest(folder: str | Path) -> dict:
    """A GGUF export's manifest, checked: format, version and that its files are there."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the GGUF export's manifest ({type(e).__name__}); "
                         "export it again with python -m quantize.export --format gguf") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("version") != VERSION:
        raise InputError(f"{path}: not an aitqe-gguf manifest of version {VERSION}; export it again")
    missing = [f for f in m["files"].values() if not (folder / f).exists()]
    if missing:
        raise InputError(f"{folder}: {missing[0]} listed in {MANIFEST} is missing; export it again")
    return m


class LlamaCppModel:
    """A GGUF language model (and optionally its mmproj) loaded with llama-cpp-python."""

    def __init__(self, model_path: str | Path, mmproj_path: str | Path | None = None, *, n_ctx: int | None = None,
                 n_threads: int | None = None, n_gpu_layers: int = 0, kv_f32: bool | None = None,
                 flash_attn: bool = False, cpu_repack: bool = False, verbose: bool = False):
        self.lib = lib = llama_cpp_module(verbose)
        self._frees: list[tuple[Callable, object]] = []  # (free function, handle), released in reverse order
        self._release = weakref.finalize(self, _release, self._frees)
        lib.llama_backend_init()
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers, mp.use_extra_bufts = n_gpu_layers, cpu_repack
        self._model = self._own(lib.llama_model_load_from_file(str(model_path).encode(), mp), lib.llama_model_free,
                                f"{model_path}: llama.cpp cannot load this GGUF; export it again")
        self.n_ctx = n_ctx or min(MAX_CTX, lib.llama_model_n_ctx_train(self._model))  # positions per row
        self._threads = n_threads
        self._kv_f32 = kv_f32 if kv_f32 is not None else lib.llama_model_ftype(self._model) == lib.LLAMA_FTYPE_ALL_F32
        self._flash = flash_attn
        self._ctx, self.lanes = None, 0
        self.set_lanes(1)
        self.n_embd = lib.llama_model_n_embd(self._model)
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model))
        self._mtmd = None
        if mmproj_path is not None:
            from llama_cpp import mtmd_cpp

            self._m = mtmd_cpp
            mtmd_cpp.mtmd_log_set(lib._logger.llama_log_callback, ctypes.c_void_p(0))
            p = mtmd_cpp.mtmd_context_params_default()
            p.use_gpu, p.print_timings, p.warmup = n_gpu_layers != 0, False, False
            if n_threads:
                p.n_threads = n_threads
            self._mtmd = self._own(mtmd_cpp.mtmd_init_from_file(str(mmproj_path).encode(), self._model, p),
                                   mtmd_cpp.mtmd_free,
                                   f"{mmproj_path}: clip.cpp cannot load this mmproj GGUF; export it again")

    def _own(self, handle, free: Callable, error: str):
        """A handle to free on close, or (NULL) InputError after freeing what was made before it."""
        if not handle:
            self.close()
            raise InputError(error)
        self._frees.append((free, handle))
        return handle

    def set_lanes(self, lanes: int) -> None:
        """Make the context hold `lanes` rows at once (n_ctx positions each) and a spare sequence for
        branches; the rows decoded so far are dropped."""
        lanes = max(1, min(lanes, MAX_LANES))
        if lanes == self.lanes:
            return
        lib = self.lib
        cp = lib.llama_context_default_params()
        cp.n_ctx, cp.n_seq_max, cp.kv_unified, cp.no_perf = lanes * self.n_ctx, lanes + 1, True, True
        cp.n_batch = cp.n_ubatch = min(self.n_ctx, 512)
        if self._threads:
            cp.n_threads = cp.n_threads_batch = self._threads
        if self._kv_f32:
            cp.type_k = cp.type_v = lib.GGML_TYPE_F32
        cp.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if self._flash else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = lib.llama_init_from_model(self._model, cp)
        if not ctx:
            if self._ctx is None:
                self.close()
            raise InputError(f"llama.cpp cannot make a context of {lanes} x {self.n_ctx} positions; "
                             "lower n_ctx or the batch size")
        if self._ctx is None:
            self._frees.append((lib.llama_free, ctx))
        else:  # in the old one's place: freed before the model (and after the mtmd context)
            index = self._frees.index((lib.llama_free, self._ctx))
            lib.llama_free(self._ctx)
            self._frees[index] = (lib.llama_free, ctx)
        self._ctx, self.lanes, self.n_batch = ctx, lanes, cp.n_batch
        self._memory = lib.llama_get_memory(ctx)

    @classmethod
    def from_export(cls, folder: str | Path, *, mmproj: bool = True, **options) -> "LlamaCppModel":
        """Load a GGUF export folder (`quantize.gguf`): its language model, and its mmproj unless not `mmproj`."""
        m = read_manifest(folder)
        return cls(Path(folder) / m["files"]["language_model"],
                   Path(folder) / m["files"]["mmproj"] if mmproj else None, **options)

    # ------------------------------------------------------------------ the image

    def image_embeddings(self, pixels: np.ndarray) -> np.ndarray:
        """clip.cpp's projected embeddings [T, H] of uint8 RGB pixels [S, S, 3] already squashed to the
        tower's size (runtime.image.resized): clip.cpp then only rescales and normalizes them."""
        if self._mtmd is None:
            raise InputError("this llama.cpp model was loaded without its mmproj; pass image embeddings instead")
        m = self._m
        rgb = np.ascontiguousarray(pixels, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] != rgb.shape[1]:
            raise ValueError(f"pixels must be uint8 [S, S, 3], got {rgb.shape}")
        bitmap = m.mtmd_bitmap_init(rgb.shape[1], rgb.shape[0], rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        chunks = m.mtmd_input_chunks_init()
        try:
            part = m.mtmd_input_part(text=None, bitmap=bitmap)
            parts = (ctypes.POINTER(m.mtmd_input_part) * 1)(ctypes.pointer(part))
            if m.mtmd_tokenize_from_parts(self._mtmd, chunks, parts, 1, False) != 0:
                raise RuntimeError("mtmd_tokenize_from_parts failed")
            image = [c for c in (m.mtmd_input_chunks_get(chunks, i) for i in range(m.mtmd_input_chunks_size(chunks)))
                     if m.mtmd_input_chunk_get_type(c) == m.MTMD_INPUT_CHUNK_TYPE_IMAGE]
            if len(image) != 1 or m.mtmd_encode_chunk(self._mtmd, image[0]) != 0:
                raise RuntimeError("clip.cpp could not encode the image")
            n = m.mtmd_input_chunk_get_n_tokens(image[0])
            return np.ctypeslib.as_array(m.mtmd_get_output_embd(self._mtmd), shape=(n, self.n_embd)).copy()
        finally:
            m.mtmd_input_chunks_free(chunks)
            m.mtmd_bitmap_free(bitmap)

    # ------------------------------------------------------------------ decoding

    def _decode(self, start: int, seq: int, *, tokens: Sequence[int] = (), embeddings: np.ndarray | None = None,
                logits: bool = False) -> np.ndarray | None:
        """Feed tokens or embedding rows to sequence `seq` from position `start`, n_batch at a time;
        the logits [V] of the last one when asked."""
        lib, n = self.lib, len(tokens) if embeddings is None else embeddings.shape[0]
        for lo in range(0, n, self.n_batch):
            hi = min(n, lo + self.n_batch)
            batch = lib.llama_batch_init(hi - lo, 0 if embeddings is None else self.n_embd, 1)
            try:
                if embeddings is None:
                    for i, t in enumerate(tokens[lo:hi]):
                        batch.token[i] = t
                else:
                    rows = np.ascontiguousarray(embeddings[lo:hi], dtype=np.float32)
                    ctypes.memmove(batch.embd, rows.ctypes.data, rows.nbytes)
                for i in range(hi - lo):
                    batch.pos[i], batch.n_seq_id[i], batch.logits[i] = start + lo + i, 1, 0
                    batch.seq_id[i][0] = seq
                batch.logits[hi - lo - 1] = logits and hi == n
                batch.n_tokens = hi - lo
                if lib.llama_decode(self._ctx, batch) != 0:
                    raise RuntimeError(f"llama_decode failed at position {start + lo} (n_ctx {self.n_ctx})")
            finally:
                lib.llama_batch_free(batch)
        if not logits:
            return None
        return np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, -1), shape=(self.n_vocab,)).copy()

    def step(self, entries: Sequence[tuple[int, int, int]]) -> np.ndarray:
        """One `llama_decode` of one token per (seq, position, token): the logits [len(entries), V]."""
        lib = self.lib
        batch = lib.llama_batch_init(len(entries), 0, 1)
        try:
            for i, (seq, pos, token) in enumerate(entries):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, 1
                batch.seq_id[i][0] = seq
            batch.n_tokens = len(entries)
            if lib.llama_decode(self._ctx, batch) != 0:
                raise RuntimeError(f"llama_decode failed on a step of {len(entries)} rows")
        finally:
            lib.llama_batch_free(batch)
        return np.ctypeslib.as_array(lib.llama_get_logits(self._ctx), shape=(len(entries), self.n_vocab)).copy()

    def check(self, embeds: np.ndarray, n_ids: int, max_new_tokens: int) -> int:
        """A row's prompt positions (image + prompt ids), or ValueError / InputError when it cannot run."""
        if embeds.ndim != 2 or embeds.shape[1] != self.n_embd:
            raise ValueError(f"image embeddings must be [T, {self.n_embd}], got {embeds.shape}")
        length = embeds.shape[0] + n_ids
        if length + max_new_tokens > self.n_ctx:
            raise InputError(f"{length} prompt positions + {max_new_tokens} new tokens exceed the context of "
                             f"{self.n_ctx}; load the model with a larger n_ctx")
        return length

    def prefill(self, seq: int, embeds: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """Feed a row's image embeddings, then its prompt ids, to sequence `seq`: the logits [V] after them."""
        row = self._decode(0, seq, embeddings=embeds, logits=not ids)
        return self._decode(embeds.shape[0], seq, tokens=list(ids), logits=True) if ids else row

    def clear(self) -> None:
        """Drop every sequence's KV cache."""
        self.lib.llama_memory_clear(self._memory, True)

    def forget(self, seq: int) -> None:
        """Drop sequence `seq`'s KV cache (its lane is free for another row)."""
        self.lib.llama_memory_seq_rm(self._memory, seq, -1, -1)

    def generate(self, image: np.ndarray, prompt_ids: Sequence[int], max_new_tokens: int, eos_ids: Sequence[int],
                 *, stop: Callable[[list[int]], bool] | None = None, logits: bool = False,
                 branch: Callable[[list[int]], int | None] | None = None,
                 probs: Sequence[int] | None = None) -> Generation:
        """Greedy new ids after [image] + prompt_ids. `image`: float embeddings [T, H] (the torch tower's)
        or uint8 pixels [S, S, 3] for clip.cpp. Ends after an id of `eos_ids` (kept), when `stop(ids)` is
        true, or after `max_new_tokens`. `logits`: keep each step's logits. `branch(ids)`, asked after
        each chosen id, may name another token to evaluate in its place (logits in `branches`). `probs`:
        ids whose full-softmax probabilities to keep at each step (`Generation.probs`)."""
        request = Request(image, prompt_ids, max_new_tokens, eos_ids, stop, logits, branch, probs)
        return next(run(self, [(None, request)]))[1]

    def generate_many(self, requests: Iterable[tuple[Any, Request]]) -> Iterator[tuple[Any, Generation]]:
        """Each (key, request) greedy-decoded, `lanes` rows together: (key, Generation) as each ends; a
        row's KV cache stays until the next is taken (`branch_logits` with its `seq`)."""
        return run(self, requests)

    def branch_logits(self, position: int, token: int, seq: int = 0) -> np.ndarray:
        """The logits [V] after `token` fed at `position` on a copy of sequence `seq`'s cache before it
        (positions < position): during `generate` or after it, until the next row."""
        spare = self.lanes
        self.lib.llama_memory_seq_cp(self._memory, seq, spare, -1, position)
        try:
            return self._decode(position, spare, tokens=[token], logits=True)
        finally:
            self.lib.llama_memory_seq_rm(self._memory, spare, -1, -1)

    def close(self) -> None:
        """Free llama.cpp's model, context and mtmd context (also done when the object is collected)."""
        self._release()

    def __enter__(self) -> "LlamaCppModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _release(frees: list[tuple[Callable, object]]) -> None:
    while frees:
        free, handle = frees.pop()
        free(handle)
