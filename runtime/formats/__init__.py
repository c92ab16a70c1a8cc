"""Backbone formats: one registry of methods. Each method's module owns its config (a validated
dataclass), how it quantizes a 16-bit backbone folder, how it loads, and how its synthetic
(random-weight) variant is made. A bundle's manifest, never a file name, names its method.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from runtime.errors import InputError
from runtime.formats import bnb, dense, fp8, gptq


@dataclass(frozen=True)
class Method:
    config: Callable[..., Any]       # the config dataclass; called with no arguments, the method's defaults
    quantize: Callable[..., dict]    # (dense_dir, out, config, calibration rows | None, device) -> params
    load: Callable[..., Any]         # (folder, params, device, dtype | None) -> the backbone module
    synthetic: Callable[..., dict] | None = None  # (dense_dir, out, config, device) -> params; None: quantize
    calibrated: bool = False
    # (16-bit backbone module, config) -> bits per weight once loaded, for a method that converts at
    # load (fp8); None: the bits the bundle stores
    bits_per_weight: Callable[..., float] | None = None

    def make_synthetic(self, dense_dir, out, config, device: str) -> dict:
        """The method's random-weight variant of a random dense backbone folder."""
        if self.synthetic is not None:
            return self.synthetic(dense_dir, out, config, device)
        return self.quantize(dense_dir, out, config, None, device)


METHODS: dict[str, Method] = {
    "bf16": Method(partial(dense.DenseConfig, "bf16"), dense.quantize, dense.load),
    "fp16": Method(partial(dense.DenseConfig, "fp16"), dense.quantize, dense.load),
    "bnb-int8": Method(bnb.BnbInt8Config, bnb.quantize_int8, bnb.load),
    "bnb-nf4": Method(bnb.BnbNf4Config, bnb.quantize_nf4, bnb.load),
    "gptq-int8": Method(partial(gptq.GptqConfig, 8), gptq.quantize, gptq.load, gptq.synthetic, calibrated=True),
    "gptq-int4": Method(partial(gptq.GptqConfig, 4), gptq.quantize, gptq.load, gptq.synthetic, calibrated=True),
    "fp8": Method(fp8.Fp8Config, fp8.quantize, fp8.load, bits_per_weight=fp8.bits_per_weight),
}


def method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"backbone method {name!r} is unknown to this version (it knows {', '.join(METHODS)}); "
                         "upgrade aitqe-edge or re-create the bundle")
    return METHODS[name]
