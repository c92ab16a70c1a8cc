"""Backbone formats: one registry of methods (`runtime.formats.registry`). Each method is one module
that owns its config (a validated dataclass whose `option` fields are its command-line flags), how
it quantizes a 16-bit backbone folder, how it loads, how its synthetic (random-weight) variant is
made, and whether the fast engine may compile it; it registers itself. A bundle's manifest, never a
file name, names its method. To add a method: a module like `dense.py`, imported below or by the
code that uses it. A method module imports torch and its quantization library inside its functions:
`python -m quantize --help` reads the configs' flags without loading them.
"""

from __future__ import annotations

from runtime.formats.registry import METHODS, Flag, Method, flags, method, option, register

from runtime.formats import dense, bnb, gptq, fp8  # noqa: E402,F401  (the built-in methods register themselves)

__all__ = ["METHODS", "Flag", "Method", "flags", "method", "option", "register"]
