"""The backbone methods' command-line options, read off their config dataclasses: each field made
with `runtime.formats.option` is a flag (its help, choices and name in the field's metadata), shared
by every method whose config has it. A bool flag takes no value and flips the field's default; a
flag not given leaves the method's own default. A flag of another method is refused in one line.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from runtime.errors import InputError
from runtime.formats import METHODS, flags, method


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def method_flags() -> dict[str, tuple[dataclasses.Field, Any, list[str]]]:
    """flag -> (its first field, its Flag, the methods that take it), over the registered methods."""
    out: dict[str, tuple[dataclasses.Field, Any, list[str]]] = {}
    for m in METHODS.values():
        for flag, f, spec in flags(m.config):
            first, first_spec, owners = out.setdefault(flag, (f, spec, []))
            if (type(f.default), spec.choices) != (type(first.default), first_spec.choices):
                raise TypeError(f"method {m.name}: {flag} differs from the {owners[0]} method's {flag}")
            owners.append(m.name)
    return out


def add_method_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, choices=list(METHODS))
    g = p.add_argument_group("method options")
    for flag, (f, spec, owners) in method_flags().items():
        kind = ({"action": "store_true"} if isinstance(f.default, bool)
                else {"type": type(f.default), "choices": list(spec.choices) if spec.choices else None})
        default = "" if isinstance(f.default, bool) else f" (default {f.default})"
        g.add_argument(flag, dest=_dest(flag), default=argparse.SUPPRESS,
                       help=f"{', '.join(owners)}: {spec.help}{default}", **kind)


def method_config(args: argparse.Namespace) -> Any:
    """The --method's config: its defaults, with the method options given on the command line."""
    m = method(args.method)
    given = vars(args)
    known = method_flags()
    values = {}
    for flag, f, _ in flags(m.config):
        if _dest(flag) in given:
            values[f.name] = (not f.default) if isinstance(f.default, bool) else given[_dest(flag)]
    for flag, (_, _, owners) in known.items():
        if _dest(flag) in given and args.method not in owners:
            raise InputError(f"{flag} is supported by the {', '.join(owners)} methods only, not {args.method}")
    try:
        return m.config(**values)
    except ValueError as e:
        raise InputError(str(e)) from e
