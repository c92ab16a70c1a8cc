"""The registry of backbone methods (torchao's config + handler registry is the model): a method is
one module that defines its config dataclass and calls `register(Method(...))`. The config's fields
made with `option(...)` are the method's command-line flags (quantize.options); the other fields
are fixed by the method (e.g. a GPTQ method's bits).

This module imports no method, so a method module imports it without a cycle; `runtime.formats`
imports the built-in methods, which register themselves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from runtime.errors import InputError


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line."""

    help: str
    name: str = ""                      # the flag; "" for --field-name
    choices: tuple | None = None


def option(default: Any, help: str, *, flag: str = "", choices: tuple | None = None) -> Any:
    """A config field that is a command-line flag of `python -m quantize`. A bool field's flag
    takes no value and flips `default` (e.g. sym=True with flag --asym)."""
    return dataclasses.field(default=default, metadata={"flag": Flag(help, flag, choices)})


def flags(config: type) -> list[tuple[str, dataclasses.Field, Flag]]:
    """(flag, field, Flag) of each field of `config` made with `option`."""
    return [(f.metadata["flag"].name or "--" + f.name.replace("_", "-"), f, f.metadata["flag"])
            for f in dataclasses.fields(config) if "flag" in f.metadata]


@dataclass(frozen=True)
class Method:
    name: str                        # what the bundle's manifest records
    config: type                     # the config dataclass; config() is the method's defaults
    quantize: Callable[..., dict]    # (dense_dir, out, config, calibration rows | None, device) -> params
    load: Callable[..., Any]         # (folder, params, device, dtype | None) -> the backbone module
    synthetic: Callable[..., dict] | None = None  # (dense_dir, out, config, device) -> params; None: quantize
    calibrated: bool = False
    # (16-bit backbone module, config) -> bits per weight once loaded, for a method that converts at
    # load (fp8); None: the bits the bundle stores
    bits_per_weight: Callable[..., float] | None = None
    compiles: bool = False           # the fast engine may torch.compile a backbone of this method
    plain_shapes: bool = False       # attention and MLP matrices keep their plain shapes (checked at load)

    def make_synthetic(self, dense_dir, out, config, device: str) -> dict:
        """The method's random-weight variant of a random dense backbone folder."""
        if self.synthetic is not None:
            return self.synthetic(dense_dir, out, config, device)
        return self.quantize(dense_dir, out, config, None, device)


METHODS: dict[str, Method] = {}


def register(m: Method) -> Method:
    """Add method `m` under its name; another method under the same name is refused."""
    if not dataclasses.is_dataclass(m.config):
        raise TypeError(f"method {m.name}: its config must be a dataclass")
    if METHODS.setdefault(m.name, m) is not m:
        raise ValueError(f"a backbone method named {m.name!r} is already registered")
    return m


def method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"backbone method {name!r} is unknown to this version (it knows {', '.join(METHODS)}); "
                         "upgrade aitqe-edge or re-create the bundle")
    return METHODS[name]
