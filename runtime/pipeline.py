"""Prepare pairs ahead of the model: read, decode and preprocess images, tokenize prompts.

`prepared(preparer, pairs, workers)` yields each pair with its `Prepared` (or the `InputError` that
refused it) in input order. With workers > 0 the work runs in that many processes (spawned, so
the model's threads and CUDA context are never forked), a bounded window ahead of the consumer:
at most `workers * AHEAD` pairs (or the caller's window) are in flight, so a stream of millions of pairs, or of image bytes
from shards, never piles up in memory. The standard library's process pool is enough here: the
work is one pure function per pair, and order is kept by waiting on futures in submission order.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from runtime.data.records import Pair
from runtime.errors import InputError
from runtime.image import ImageSpec, load_image, load_image_bytes, preprocess
from runtime.prompt import prompt_ids

AHEAD = 4  # pairs in flight per worker



@dataclass
class Prepared:
    """A pair ready for the model: its pixels [3, S, S] (uint8 [S, S, 3] for clip.cpp: `Preparer.pixels`),
    its prompt's token ids and its token budget."""

    pixels: torch.Tensor
    ids: list[int]
    truncated: bool  # the caption was cut to fit the context
    budget: int


@dataclass(frozen=True)
class Preparer:
    """What the CPU side of scoring needs (picklable, small): the tokenizer and the image spec."""

    tokenizer: Any
    image_spec: ImageSpec
    image_tokens: int
    max_positions: int

    def __call__(self, pair: Pair, max_new_tokens: int) -> Prepared:
        """Validate one pair: its pixels and prompt ids, or InputError (a record its reader refused too)."""
        if pair.error is not None:
            raise InputError(pair.error)
        budget = self.max_positions - self.image_tokens - max_new_tokens
        prompt = prompt_ids(self.tokenizer, pair.caption, budget)
        if isinstance(pair.image, Image.Image):
            image = pair.image.convert("RGB")
        elif isinstance(pair.image, (bytes, bytearray, memoryview)):
            image = load_image_bytes(bytes(pair.image), str(pair.id))
        else:
            image = load_image(pair.image)
        budget = min(max_new_tokens, pair.max_new_tokens or max_new_tokens)
        return Prepared(self.pixels(image), prompt.ids, prompt.truncated, budget)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """An RGB image as the vision tower takes it: float [3, S, S], rescaled and normalized."""
        return preprocess([image], self.image_spec)[0]


def _prepare_one(preparer: Preparer, pair: Pair, max_new_tokens: int) -> Prepared | InputError:
    try:
        return preparer(pair, max_new_tokens)
    except InputError as e:
        return e


_WORKER_PREPARER: Preparer | None = None  # set once per worker process: the tokenizer travels once


def _worker_init(preparer: Preparer) -> None:
    global _WORKER_PREPARER
    torch.set_num_threads(1)
    _WORKER_PREPARER = preparer


def _prepare_in_worker(pair: Pair, max_new_tokens: int) -> Prepared | InputError:
    return _prepare_one(_WORKER_PREPARER, pair, max_new_tokens)


def ahead(items: Iterator, depth: int = 1, grad: bool = False) -> Iterator:
    """`items`, produced by a thread up to `depth` items ahead of the consumer (e.g. the next chunk
    prepared and encoded while the model decodes); its exception re-raised here, in order."""
    box: queue.Queue = queue.Queue(max(1, depth))
    stop = threading.Event()
    end = object()

    def offer(entry) -> bool:
        """Put `entry` for the consumer unless it has stopped listening (never blocks past that)."""
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with torch.inference_mode(not grad):
                for item in items:
                    if not offer((item, None)):
                        return
            offer((end, None))
        except BaseException as e:  # handed to the consumer
            offer((end, e))
        finally:
            if isinstance(items, Generator):
                items.close()  # its own clean-up (e.g. worker processes) runs now, in this thread

    thread = threading.Thread(target=produce, daemon=True, name="aitqe-ahead")
    thread.start()
    try:
        while True:
            item, error = box.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def prepared(preparer: Preparer, pairs: Iterable[Pair], max_new_tokens: int,
             workers: int = 0, window: int = 0) -> Iterator[tuple[Pair, Prepared | InputError]]:
    """Each pair with its Prepared, or the InputError that refused it, in input order; with workers,
    at least `window` pairs in flight."""
    if workers <= 0:
        for pair in pairs:
            yield pair, _prepare_one(preparer, pair, max_new_tokens)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(preparer,)) as pool:
        flight: deque = deque()
        try:
            for pair in pairs:
                flight.append((pair, pool.submit(_prepare_in_worker, pair, max_new_tokens)))
                if len(flight) >= max(workers * AHEAD, window):
                    p, f = flight.popleft()
                    yield p, f.result()
            while flight:
                p, f = flight.popleft()
                yield p, f.result()
        finally:
            for _, f in flight:
                f.cancel()
