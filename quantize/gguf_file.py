"""Write one GGUF file from in-memory torch tensors, one tensor converted at a time.

`gguf.GGUFWriter` keeps every tensor it is given until the file is written; for a 7B model that
is a second copy of the weights. Here the tensor infos are declared first (shape and type, known
without converting anything), then header, metadata and infos are written, then each tensor is
converted and written in turn, so at most one converted tensor is in memory.

Storage types: F32; F16 (plain IEEE half: 2-D weight matrices only, as llama.cpp's converters do;
norms, biases and convolution kernels stay F32); BF16 (bit-exact for a bf16 checkpoint: the input
that llama.cpp's own quantizer reads when asked for Q8_0 or a K-quant).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter

F32, F16, BF16 = GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16


@dataclass(frozen=True)
class Tensor:
    name: str  # the GGUF name (llama.cpp's)
    value: torch.Tensor
    kind: GGMLQuantizationType  # what 2-D weight matrices are stored as; everything else is F32

    @property
    def stored(self) -> GGMLQuantizationType:
        return self.kind if self.value.dim() == 2 and self.name.endswith(".weight") else F32

    def layout(self) -> tuple[tuple[int, ...], np.dtype, int, GGMLQuantizationType | None]:
        """(shape, numpy dtype, bytes, raw type) for `GGUFWriter.add_tensor_info`."""
        shape, n = tuple(self.value.shape), self.value.numel()
        if self.stored == BF16:
            return (*shape[:-1], shape[-1] * 2), np.dtype(np.uint8), 2 * n, BF16
        dtype = np.dtype(np.float16 if self.stored == F16 else np.float32)
        return shape, dtype, n * dtype.itemsize, None

    def array(self) -> np.ndarray:
        t = self.value.detach().cpu()
        if self.stored == BF16:
            return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint8)
        return t.to(torch.float16 if self.stored == F16 else torch.float32).contiguous().numpy()


def storage_kind(dtype: torch.dtype) -> GGMLQuantizationType:
    """The GGUF type that holds a checkpoint's weights without loss."""
    return {torch.float32: F32, torch.float16: F16, torch.bfloat16: BF16}[dtype]


def write_gguf(path: Path, arch: str, metadata: Callable[[GGUFWriter], None], tensors: list[Tensor]) -> None:
    """Write `path`: `metadata(writer)` adds the key-value pairs, then the tensors in order."""
    writer = GGUFWriter(path, arch)
    try:
        metadata(writer)
        for t in tensors:
            shape, dtype, nbytes, raw = t.layout()
            writer.add_tensor_info(t.name, shape, dtype, nbytes, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in tensors:
            writer.write_tensor_data(t.array())
        writer.flush()
    finally:
        writer.close()
