"""gptq-int4 / gptq-int8: GPTQ (Frantar et al. 2022, arXiv:2210.17323) on AITQE's own inputs.

Library: GPTQModel 7.7, the maintained successor of auto-gptq, which optimum and transformers' GPTQ
loading now require (the alternatives, and why not: docs/design-notes.md). It writes the standard
GPTQ format (`quant_method: "gptq"`, qweight/qzeros/scales/g_idx) that transformers and vLLM load,
and loads it with its kernels: on CPU its torch kernel (fp16); on CUDA its Marlin kernel (vLLM's
mixed-precision GEMM, int4/int8 symmetric, fast at decode and at prefill-sized batches) when the
bundle's settings allow it (`marlin_refusal`, which asks GPTQModel's own Marlin validation), else its
Triton kernel, then its torch kernel, each fallback named in one line on stderr. GPTQModel builds
Marlin on first use (JIT: it needs `nvcc` and the CUDA headers); where that fails, the fallback note
says so. The fast engine decodes GPTQ backbones eagerly (`compiles=False`): GPTQModel 7.7 registers
no fake (meta) kernel for its Marlin op, so Dynamo cannot trace through it (a graph break per linear
layer, 196 in a 7B step, and no CUDA graph); registering one here would mean restating the op's
output shape for each GPTQModel version's private schema, and that has not been done or tested.

Multimodal calibration: GPTQModel calibrates on token ids only, so each calibration sequence
(image embeddings + prompt [+ answer] token embeddings, from `calibration/`) gets a placeholder id,
and a forward hook on the embedding layer swaps the placeholder rows for the real sequence. GPTQ's
Hessians therefore see exactly what the backbone sees at run time.

The synthetic variant (`synthetic`) writes random codes in the on-disk format GPTQModel writes
(`FORMAT`; tests/test_formats.py holds it to a folder GPTQModel quantized): running GPTQ on a 7B
model would outlast the benchmark, and a kernel's cost does not depend on the codes' values.
GPTQModel logs to stdout; that goes to stderr so stdout stays the scorer's JSON.
"""

from __future__ import annotations

import contextlib
import json
import gc
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.formats.registry import Method, option, register

if TYPE_CHECKING:
    import torch

GROUP_SIZES = (-1, 32, 64, 128, 256)
MARLIN_MIN_CAPABILITY = (7, 5)  # GPTQModel 7.7's Marlin: sm75+ (fp16 on sm75)
FORMAT = {"quant_method": "gptq", "checkpoint_format": "gptq", "format": "gptq", "pack_dtype": "int32"}


@dataclass(frozen=True)
class GptqConfig:
    bits: int = 4                # fixed by the method's name
    group_size: int = option(128, "weights per scale (-1: per row)")
    # quantize columns in order of decreasing Hessian diagonal
    act_order: bool = option(False, "act-order (desc_act)")
    # symmetric grid (vLLM's fast Marlin kernels need it)
    sym: bool = option(True, "asymmetric grid (vLLM's Marlin needs symmetric)", flag="--asym")
    damp: float = option(0.01, "Hessian dampening (a fraction of the mean Hessian diagonal)")

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"gptq bits {self.bits}: use 4 or 8")
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"gptq group size {self.group_size}: use one of {GROUP_SIZES}")
        if not 0 < self.damp < 1:
            raise ValueError(f"gptq damp {self.damp}: must be in (0, 1), e.g. 0.01")


@dataclass(frozen=True)
class Gptq8Config(GptqConfig):
    bits: int = 8


def quiet_stdout():
    return contextlib.redirect_stdout(sys.stderr)


def _workers() -> None:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(2, os.cpu_count() or 1)))  # its default asks for more


def check_shapes(dense_dir: Path, cfg: GptqConfig) -> dict:
    c = json.loads((dense_dir / "config.json").read_text())
    for name in ("hidden_size", "intermediate_size"):
        if cfg.group_size > 0 and c[name] % cfg.group_size:
            raise ValueError(f"gptq group size {cfg.group_size} does not divide the backbone's {name} "
                             f"({c[name]}); choose another --group-size")
    return c


def quantize(dense_dir: Path, out: Path, cfg: GptqConfig, calibration: list[torch.Tensor],
             device: str = "cpu") -> dict:
    """Quantize the 16-bit backbone folder into `out`; `calibration`: the backbone's input rows [L, H]."""
    check_shapes(dense_dir, cfg)
    _workers()
    dense_dir, out = dense_dir.resolve(), out.resolve()
    cwd = os.getcwd()
    os.chdir(dense_dir.parent)  # GPTQModel writes its logs/ folder into the working directory
    try:
        with quiet_stdout():
            _quantize(dense_dir, out, cfg, calibration, device)
    finally:
        os.chdir(cwd)
    return asdict(cfg)


def _quantize(dense_dir: Path, out: Path, cfg: GptqConfig, calibration: list[torch.Tensor], device: str) -> None:
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig

    qcfg = QuantizeConfig(bits=cfg.bits, group_size=cfg.group_size, desc_act=cfg.act_order,
                          sym=cfg.sym, damp_percent=cfg.damp)
    model = GPTQModel.load(str(dense_dir), qcfg, device=device, dtype=torch.float16)
    embed = model.model.get_input_embeddings()
    rows = [r.to(torch.float16) for r in calibration]
    pad = model.tokenizer.pad_token_id if getattr(model, "tokenizer", None) is not None else None
    codes = [c for c in range(1, len(rows) + 2) if c != pad][: len(rows)]
    by_code = dict(zip(codes, rows))
    examples = [{"input_ids": torch.full((1, r.shape[0]), c), "attention_mask": torch.ones(1, r.shape[0], dtype=torch.long)}
                for c, r in by_code.items()]

    def inject(module, args, output):  # placeholder ids -> the real multimodal sequence
        ids, new = args[0], torch.zeros_like(output)
        for i in range(ids.shape[0]):
            keep = ids[i] != pad if pad is not None else torch.ones_like(ids[i], dtype=torch.bool)
            code = int(ids[i][keep][0])
            new[i, keep] = by_code[code].to(output.device, output.dtype)
        return new

    hook = embed.register_forward_hook(inject)
    try:
        model.quantize(examples, batch_size=1, calibration_data_min_length=0)
    finally:
        hook.remove()
    model.save(str(out))


def linear_shapes(config: dict) -> list[tuple[int, int]]:
    """(in_features, out_features) of each kind of decoder Linear layer of a Qwen2 config."""
    h, i = config["hidden_size"], config["intermediate_size"]
    head = config.get("head_dim") or h // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head, config["num_key_value_heads"] * head
    return sorted({(h, q), (h, kv), (q, h), (h, i), (i, h)})


def marlin_refusal(quant: dict, config: dict, capability: tuple[int, int] | None = None) -> str | None:
    """Why GPTQModel's Marlin kernel cannot run a GPTQ folder (its `quantization_config` and model
    config) on a card of `capability` (None: any), or None when it can. The rules are GPTQModel's own
    (`MarlinLinear._validate`: bits 4/8, symmetric, group size -1/32/64/128 or the layer width,
    act-order only on tile-aligned shapes, packed widths)."""
    import torch

    with quiet_stdout():
        from gptqmodel.nn_modules.qlinear.marlin import MarlinLinear

    if capability is not None and capability < MARLIN_MIN_CAPABILITY:
        return f"Marlin needs compute capability >= 7.5, this card has {capability[0]}.{capability[1]}"
    for in_f, out_f in linear_shapes(config):
        ok, err = MarlinLinear._validate(bits=quant["bits"], group_size=quant["group_size"],
                                         desc_act=bool(quant.get("desc_act")), sym=bool(quant.get("sym", True)),
                                         in_features=in_f, out_features=out_f, pack_dtype=torch.int32,
                                         dtype=torch.float16)
        if not ok:
            reason = re.sub(r"<class '[^']*'>\s*", "", str(err))
            return f"Marlin refuses a {in_f}x{out_f} layer with bits {quant['bits']}, group size " \
                   f"{quant['group_size']}, sym {quant.get('sym')}, desc_act {quant.get('desc_act')} ({reason})"
    return None


def cuda_backends(folder: Path, device: str) -> list[tuple[object, str | None]]:
    """GPTQModel backends to try on CUDA, best first, each with the reason it is not the first choice."""
    import torch
    from gptqmodel import BACKEND

    config = json.loads((folder / "config.json").read_text())
    capability = torch.cuda.get_device_capability(torch.device(device))
    refusal = marlin_refusal(config["quantization_config"], config, capability)
    chain = [] if refusal else [(BACKEND.GPTQ_MARLIN, None)]
    return chain + [(BACKEND.GPTQ_TRITON, refusal), (BACKEND.GPTQ_TORCH, None)]


def load(folder: Path, params: dict, device: str, dtype: torch.dtype | None) -> torch.nn.Module:
    """The backbone with GPTQModel's kernels, in fp16 (its CPU kernels compute only in fp16/bf16).

    On CUDA: Marlin, else Triton, else torch (`cuda_backends`), a note on stderr for each one
    skipped or failed. On CPU the torch kernel's dequantization is left eager, not torch.compile'd
    (docs/design-notes.md)."""
    import torch

    _workers()
    with quiet_stdout():
        from gptqmodel import BACKEND, GPTQModel
    if not device.startswith("cuda"):
        with quiet_stdout():
            wrapper = GPTQModel.load(str(folder), device=device, backend=BACKEND.TORCH, dtype=torch.float16)
        for module in wrapper.model.modules():
            if "dequantize_weight" in vars(module):  # the instance's compiled wrapper -> the class's method
                del module.dequantize_weight
        return wrapper.model
    why = None
    for backend, skipped in cuda_backends(folder, device):
        if why or skipped:
            print(f"gptq: {why or skipped}; using GPTQModel's {backend.value} kernel", file=sys.stderr)
        try:
            with quiet_stdout():
                wrapper = GPTQModel.load(str(folder), device=device, backend=backend, dtype=torch.float16)
            return wrapper.model
        except Exception as e:  # a kernel that does not build or load here: the next one
            why = f"the {backend.value} kernel failed to load ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]})"
            gc.collect()
            torch.cuda.empty_cache()
    raise RuntimeError(why)


def synthetic(dense_dir: Path, out: Path, cfg: GptqConfig, device: str = "cpu") -> dict:
    """A GPTQ folder of the dense backbone's shapes whose decoder Linear layers hold random codes
    (GPTQModel's layout: qweight [in / (32 / bits), out], qzeros [groups, out / (32 / bits)] holding
    zero - 1, fp16 scales [groups, out], g_idx [in]); the other tensors are the dense folder's."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    c = check_shapes(dense_dir, cfg)
    if not cfg.sym or cfg.act_order or cfg.group_size < 0:
        raise ValueError("a synthetic gptq variant is symmetric, in column order, with a group size")
    per_word = 32 // cfg.bits
    zero_word = sum((2 ** (cfg.bits - 1) - 1) << (cfg.bits * i) for i in range(per_word))  # < 2**31
    gen = torch.Generator(device).manual_seed(0)
    state = {}
    for f in sorted(dense_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                module = name.rsplit(".", 1)[0]
                if not (name.startswith("model.layers.") and name.endswith(".weight") and len(st.get_slice(name).get_shape()) == 2):
                    state[name] = st.get_tensor(name).to(torch.float16)
                    continue
                out_f, in_f = st.get_slice(name).get_shape()
                groups = in_f // cfg.group_size
                state[f"{module}.qweight"] = torch.randint(-2**31, 2**31 - 1, (in_f // per_word, out_f), dtype=torch.int32,
                                                           device=device, generator=gen).cpu()
                state[f"{module}.qzeros"] = torch.full((groups, out_f // per_word), zero_word, dtype=torch.int32)
                state[f"{module}.scales"] = torch.full((groups, out_f), 2e-3, dtype=torch.float16)
                state[f"{module}.g_idx"] = torch.arange(in_f, dtype=torch.int32) // cfg.group_size
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    quant = {"bits": cfg.bits, "group_size": cfg.group_size, "desc_act": False, "sym": True, "lm_head": False, **FORMAT}
    (out / "config.json").write_text(json.dumps({**c, "torch_dtype": "float16", "quantization_config": quant}, indent=2))
    (out / "quantize_config.json").write_text(json.dumps(quant, indent=2))
    return {**asdict(cfg), "synthetic": "random codes"}


# GPTQModel's kernels are not compiled: the fast engine decodes them eagerly
register(Method("gptq-int8", Gptq8Config, quantize, load, synthetic, calibrated=True))
register(Method("gptq-int4", GptqConfig, quantize, load, synthetic, calibrated=True))
