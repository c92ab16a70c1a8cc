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
`branch` evaluates another token in place of a chosen one on a second sequence sharing the KV
cache, during `generate` or after it (`branch_logits`, while the row's cache is still there): what
the probability-weighted score needs for its "1" branch (runtime.scores). `probs` keeps, per step,
only the full-softmax probabilities of a few ids (what an observer reads), not the whole logits.
"""

from __future__ import annotations

import ctypes
import json
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.errors import InputError
from runtime.model.locate import GGUF_INFO as MANIFEST

FORMAT, VERSION = "aitqe-gguf", 1
MAX_CTX = 4096  # default context: the model's trained one, at most this (AITQE needs ~729 + 100 + 384)
INSTALL = "pip install 'aitqe-edge[llama]' (builds llama.cpp from source, about 10 CPU-minutes)"


def llama_cpp_module(verbose: bool = False):
    """The `llama_cpp` package with its logging quieted, or a one-line InputError saying how to install it."""
    try:
        import llama_cpp
        import llama_cpp._logger as logger
    except ImportError:
        raise InputError(f"llama-cpp-python is not installed; {INSTALL}") from None
    logger.set_verbose(verbose)
    return llama_cpp


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


@dataclass
class Generation:
    ids: list[int]  # new ids, up to and including the one that ended it
    logits: np.ndarray | None  # [len(ids), V] float32: row k chose ids[k] (when asked for)
    branches: dict[int, np.ndarray] = field(default_factory=dict)  # k -> logits after the branch token at k
    probs: np.ndarray | None = None  # [len(ids), len(probs ids)] float64: full-softmax probabilities (when asked)
    length: int = 0  # prompt positions (image + prompt ids): new token k sits at position length + k
    prefill_seconds: float = 0.0
    seconds: float = 0.0


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
        n_ctx = n_ctx or min(MAX_CTX, lib.llama_model_n_ctx_train(self._model))
        cp = lib.llama_context_default_params()
        cp.n_ctx, cp.n_seq_max, cp.kv_unified, cp.no_perf = n_ctx, 2, True, True
        cp.n_batch = cp.n_ubatch = min(n_ctx, 512)
        if n_threads:
            cp.n_threads = cp.n_threads_batch = n_threads
        if kv_f32 if kv_f32 is not None else lib.llama_model_ftype(self._model) == lib.LLAMA_FTYPE_ALL_F32:
            cp.type_k = cp.type_v = lib.GGML_TYPE_F32
        cp.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = self._own(lib.llama_init_from_model(self._model, cp), lib.llama_free,
                              f"llama.cpp cannot make a context of {n_ctx} positions; lower n_ctx")
        self.n_ctx, self.n_batch = n_ctx, cp.n_batch
        self.n_embd = lib.llama_model_n_embd(self._model)
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model))
        self._memory = lib.llama_get_memory(self._ctx)
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

    def generate(self, image: np.ndarray, prompt_ids: Sequence[int], max_new_tokens: int, eos_ids: Sequence[int],
                 *, stop: Callable[[list[int]], bool] | None = None, logits: bool = False,
                 branch: Callable[[list[int]], int | None] | None = None,
                 probs: Sequence[int] | None = None) -> Generation:
        """Greedy new ids after [image] + prompt_ids. `image`: float embeddings [T, H] (the torch tower's)
        or uint8 pixels [S, S, 3] for clip.cpp. Ends after an id of `eos_ids` (kept), when `stop(ids)` is
        true, or after `max_new_tokens`. `logits`: keep each step's logits. `branch(ids)`, asked after
        each chosen id, may name another token to evaluate in its place (logits in `branches`). `probs`:
        ids whose full-softmax probabilities to keep at each step (`Generation.probs`)."""
        start = time.perf_counter()
        embeds = np.asarray(image)
        if embeds.dtype == np.uint8:
            embeds = self.image_embeddings(embeds)
        if embeds.ndim != 2 or embeds.shape[1] != self.n_embd:
            raise ValueError(f"image embeddings must be [T, {self.n_embd}], got {embeds.shape}")
        length = embeds.shape[0] + len(prompt_ids)
        if length + max_new_tokens > self.n_ctx:
            raise InputError(f"{length} prompt positions + {max_new_tokens} new tokens exceed the context of "
                             f"{self.n_ctx}; load the model with a larger n_ctx")
        self.lib.llama_memory_clear(self._memory, True)
        row = self._decode(0, 0, embeddings=embeds, logits=not prompt_ids)
        if prompt_ids:
            row = self._decode(embeds.shape[0], 0, tokens=list(prompt_ids), logits=True)
        prefill = time.perf_counter() - start
        out, rows, kept, eos = Generation([], None, length=length), [], [], set(eos_ids)
        for k in range(max_new_tokens):
            token = int(np.argmax(row))  # the first maximum, as torch.argmax
            out.ids.append(token)
            if logits:
                rows.append(row)
            if probs is not None:
                kept.append(softmax_at(row, probs))
            other = branch(out.ids) if branch else None
            if other is not None:
                out.branches[k] = self.branch_logits(length + k, other)
            if token in eos or (stop and stop(out.ids)) or k + 1 == max_new_tokens:
                break
            row = self._decode(length + k, 0, tokens=[token], logits=True)
        if logits:
            out.logits = np.stack(rows) if rows else np.zeros((0, self.n_vocab), np.float32)
        if probs is not None:
            out.probs = np.asarray(kept, np.float64).reshape(len(kept), len(probs))
        out.prefill_seconds, out.seconds = prefill, time.perf_counter() - start
        return out

    def branch_logits(self, position: int, token: int) -> np.ndarray:
        """The logits [V] after `token` fed at `position` on a copy of the last row's cache before it
        (positions < position): during `generate` or after it, until the next row."""
        self.lib.llama_memory_seq_cp(self._memory, 0, 1, -1, position)
        try:
            return self._decode(position, 1, tokens=[token], logits=True)
        finally:
            self.lib.llama_memory_seq_rm(self._memory, 1, -1, -1)

    def close(self) -> None:
        """Free llama.cpp's model, context and mtmd context (also done when the object is collected)."""
        self._release()

    def __enter__(self) -> "LlamaCppModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def softmax_at(logits: np.ndarray, ids: Sequence[int]) -> list[float]:
    """The full softmax's probabilities of `ids` (computed in float64)."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max())
    return (e[list(ids)] / e.sum()).tolist()


def _release(frees: list[tuple[Callable, object]]) -> None:
    while frees:
        free, handle = frees.pop()
        free(handle)
