"""The ONNX vision backend: AITQE's vision encoder (SigLIP cut at hidden_states[-2] + projector)
exported by `quantize.vision`, run by onnxruntime with the same contract as `VisionEncoder`:
pixels [B, 3, S, S] -> embeddings [B, T, H], on the scorer's device and dtype.

Providers: on `cuda` the CUDA provider when onnxruntime-gpu is installed (else the CPU provider,
with a warning); `AITQE_ORT_PROVIDERS` (comma-separated provider names, e.g.
"TensorrtExecutionProvider,CUDAExecutionProvider") overrides the choice. Pixels and embeddings
are bound in place (IO binding) on the torch tensors' own memory, so on a GPU they never pass
through host memory, and on the CPU the output is written straight into the returned tensor.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from runtime.errors import InputError

ORT_TYPES = {"tensor(float)": (torch.float32, np.float32), "tensor(float16)": (torch.float16, np.float16)}


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise InputError("this vision encoder is ONNX and onnxruntime is not installed; "
                         "pip install 'aitqe-edge[cpu]' (or 'aitqe-edge[gpu]' on a CUDA machine)") from e
    return onnxruntime


def providers_for(device: torch.device) -> list:
    """Execution providers (with options) for a torch device."""
    ort = _ort()
    available = ort.get_available_providers()
    if os.environ.get("AITQE_ORT_PROVIDERS"):
        chosen = [p.strip() for p in os.environ["AITQE_ORT_PROVIDERS"].split(",") if p.strip()]
        unknown = [p for p in chosen if p not in available]
        if unknown:
            raise InputError(f"AITQE_ORT_PROVIDERS names {unknown[0]}, which this onnxruntime lacks "
                             f"(it has {', '.join(available)}); fix or unset AITQE_ORT_PROVIDERS")
        return chosen + (["CPUExecutionProvider"] if "CPUExecutionProvider" not in chosen else [])
    if device.type == "cuda":
        if "CUDAExecutionProvider" in available:
            return [("CUDAExecutionProvider", {"device_id": device.index or 0,
                                               "cudnn_conv_algo_search": "HEURISTIC",
                                               "arena_extend_strategy": "kSameAsRequested"}),
                    "CPUExecutionProvider"]
        print("warning: onnxruntime has no CUDA provider (install aitqe-edge[gpu] for onnxruntime-gpu); "
              "the ONNX vision encoder runs on the CPU", file=sys.stderr)
    return ["CPUExecutionProvider"]


class OnnxVisionEncoder:
    """Callable pixels -> embeddings over an onnxruntime session (see the module docstring)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                 threads: int | None = None):
        ort = _ort()
        self.path, self.device, self.dtype = Path(path), torch.device(device), dtype
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()  # one knob for torch and ORT
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave the CPU to the LLM
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers_for(self.device))
        except Exception as e:  # onnxruntime raises its own types (Fail, InvalidGraph, ...)
            raise InputError(f"{self.path}: onnxruntime cannot load the vision encoder "
                             f"({str(e).splitlines()[0][:300]}); re-export it with python -m quantize.vision") from e
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        if inp.type not in ORT_TYPES or out.type not in ORT_TYPES or len(inp.shape) != 4 or len(out.shape) != 3:
            raise InputError(f"{self.path}: not an aitqe-edge vision encoder (input {inp.type} {inp.shape}, "
                             f"output {out.type} {out.shape}); re-export it with python -m quantize.vision")
        self.input, self.output = inp.name, out.name
        self.in_types, self.out_types = ORT_TYPES[inp.type], ORT_TYPES[out.type]
        self.image_size, self.tokens, self.hidden = inp.shape[2], out.shape[1], out.shape[2]
        self.on_gpu = self.session.get_providers()[0] != "CPUExecutionProvider"
        self.bind_device = "cuda" if self.on_gpu and self.device.type == "cuda" else "cpu"

    def __repr__(self) -> str:
        return f"OnnxVisionEncoder({self.path}, providers={self.session.get_providers()})"

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, s, s):
            raise InputError(f"vision encoder: pixels of shape {tuple(pixels.shape)}, expected [B, 3, {s}, {s}]; "
                             "use runtime.image.preprocess with the model's image spec")
        where = torch.device("cuda", self.device.index) if self.bind_device == "cuda" else torch.device("cpu")
        x = pixels.to(where, self.in_types[0]).contiguous()
        y = torch.empty((x.shape[0], self.tokens, self.hidden), dtype=self.out_types[0], device=where)
        if x.shape[0]:
            binding = self.session.io_binding()
            index = where.index or 0
            binding.bind_input(self.input, self.bind_device, index, self.in_types[1], tuple(x.shape), x.data_ptr())
            binding.bind_output(self.output, self.bind_device, index, self.out_types[1], tuple(y.shape), y.data_ptr())
            if where.type == "cuda":
                torch.cuda.current_stream(where).synchronize()  # pixels are written before ORT reads them
            self.session.run_with_iobinding(binding)
        return y.to(self.device, self.dtype or y.dtype)
