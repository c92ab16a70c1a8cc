"""fp8: W8A8 float8 (e4m3) backbone for cards with float8 tensor cores (CUDA compute capability
>= 8.9: RTX 4090/5090, L4/L40, H100/H200), with torchao's `Float8DynamicActivationFloat8WeightConfig`
(`quantize_`): each decoder Linear weight becomes float8 with one scale per output row, and each
activation is cast to float8 per token at run time, so prefill's large matmuls run on the float8
tensor cores (twice bf16's peak) as well as decode reading half the bytes (Micikevicius et al. 2022,
"FP8 Formats for Deep Learning", arXiv:2209.05433).

The bundle stores the 16-bit backbone (bf16, as the dense methods do) and the method; the weights
are converted as they load (`load`: read into CPU memory, each Linear converted as it moves to the
card). So the bundle's disk size is bf16's and its `bits_per_weight` (quantize.backbone) is the
backbone's in memory once loaded (`LOADED_BITS` for the converted Linear weights; embeddings and
lm_head stay bf16, lm_head too unless `quantize_lm_head`). Anywhere else (CPU, older cards) loading
refuses in one line naming the card's capability: torchao's float8 matmul needs those tensor cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import InputError
from runtime.formats.dense import DenseConfig, load as load_dense, quantize as quantize_dense
from runtime.formats.registry import Method, option, register

if TYPE_CHECKING:
    import torch

MIN_CAPABILITY = (8, 9)
LOADED_BITS = 8.0           # per decoder Linear weight once converted (+ one fp32 scale per output row)
GRANULARITIES = ("row", "tensor")
ACTIVATION_FLOOR = 1e-12    # least activation amax a float8 scale is computed from


@dataclass(frozen=True)
class Fp8Config:
    granularity: str = option("row", "a float8 scale per output row and token (row) or one per tensor",
                              flag="--fp8-granularity", choices=GRANULARITIES)
    quantize_lm_head: bool = option(False, "quantize lm_head too")

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"fp8 granularity {self.granularity!r}: use one of {', '.join(GRANULARITIES)}")


def quantize(dense_dir: Path, out: Path, cfg: Fp8Config, calibration=None, device: str = "cpu") -> dict:
    """The 16-bit backbone in bf16; float8 conversion happens at load, on a float8 card."""
    quantize_dense(dense_dir, out, DenseConfig("bf16"), device=device)
    return {**asdict(cfg), "stored": "bf16", "converted_at_load": "torchao float8 dynamic activation + weight"}


def bits_per_weight(llm: torch.nn.Module, cfg: Fp8Config) -> float:
    """Bits per backbone weight once loaded: converted Linear weights 8 (+ a 32-bit scale per output row
    with row granularity), the rest bf16."""
    total = sum(p.numel() for p in llm.parameters())
    bits = 16.0 * total
    for name, module in llm.named_modules():
        if is_converted(module, name, cfg):
            out_f, in_f = module.weight.shape
            bits -= module.weight.numel() * (16 - LOADED_BITS) - (32 * out_f if cfg.granularity == "row" else 32)
    return bits / total


def refusal(device: str) -> str | None:
    """Why float8 cannot run on `device` (None when it can)."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return (f"the fp8 backbone runs only on a CUDA GPU with compute capability >= 8.9 (RTX 4090/5090, L40, "
                f"H100), not on {device}; use a gptq-int4, gptq-int8 or bf16 bundle there")
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if (major, minor) < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(torch.device(device))
        return (f"the fp8 backbone needs float8 tensor cores (compute capability >= 8.9); {name} has {major}.{minor}: "
                "use a gptq-int4 or gptq-int8 bundle on this card")
    return None


def torchao_config(cfg: Fp8Config):
    """torchao's config for `cfg`."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor

    granularity = PerRow() if cfg.granularity == "row" else PerTensor()
    # a floor under each activation scale: an all-zero row (padding) would get scale 0 and turn into
    # NaN, which attention then spreads to the real tokens
    return Float8DynamicActivationFloat8WeightConfig(granularity=granularity, activation_value_lb=ACTIVATION_FLOOR)


def is_converted(module: torch.nn.Module, name: str, cfg: Fp8Config) -> bool:
    """Which modules become float8: every Linear but lm_head (unless asked)."""
    import torch

    return isinstance(module, torch.nn.Linear) and (cfg.quantize_lm_head or not name.endswith("lm_head"))


def convert(model: torch.nn.Module, cfg: Fp8Config, device: str | None = None) -> torch.nn.Module:
    """Convert the bf16 model's Linear weights (`is_converted`) to float8 in place, with torchao; with
    `device`, each module moves there as it is converted (torchao's `quantize_(device=)`), so the card
    never holds the whole bf16 backbone."""
    from torchao.quantization import quantize_

    quantize_(model, torchao_config(cfg), filter_fn=lambda m, name: is_converted(m, name, cfg), device=device)
    return model


def load(folder: Path, params: dict, device: str, dtype: torch.dtype | None) -> torch.nn.Module:
    """The bf16 backbone, read into CPU memory, its Linear weights converted to float8 one module at a
    time on the card (peak card memory: the float8 backbone + one bf16 layer). dtype: ignored,
    torchao's per-row float8 computes in bf16."""
    import torch

    why = refusal(device)
    if why:
        raise InputError(why)
    cfg = Fp8Config(**{k: params[k] for k in ("granularity", "quantize_lm_head") if k in params})
    return convert(load_dense(folder, {"dtype": "bf16"}, "cpu", torch.bfloat16), cfg, device).to(device)


# torchao's float8 tensors trace through Dynamo with no graph break: the fast engine compiles the step
# (tests/test_engine_compile.py: same ids as eager on CPU, one graph per bucket)
register(Method("fp8", Fp8Config, quantize, load, bits_per_weight=bits_per_weight, compiles=True))
