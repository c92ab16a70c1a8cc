"""Dataset formats: the one registry that finding shards, reading records and enhancing consult.

A format is one module that builds a `Format` (its name, how its shards are recognised, how to read
a shard into records, and how to write an enhanced copy, if it can) and passes it to `register`.
Finding shards (`runtime.data.records.find_shards`), reading them (`read_records`) and the
enhanced copies (`runtime.data.enhance`) only ever ask this registry. The built-in formats are
the modules named in `BUILTIN`, in the order a folder is tried (a folder holding .tar files is a
WebDataset, whose .parquet files are metadata); a format registered from elsewhere (a plug-in, a
test) comes after them. Pairs files (`pairs=True`: JSONL, CSV) are scored into one verdicts JSONL,
resumed by line; the others into one verdicts Parquet per shard, resumed by shard.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.data.records import OUTPUT_SUFFIX, Record, Shard
from runtime.errors import InputError

# name -> module that registers it; a folder is tried against them in this order
BUILTIN = {"webdataset": "runtime.data.webdataset_tar", "parquet": "runtime.data.parquet_table",
           "jsonl": "runtime.data.jsonl", "csv": "runtime.data.csv_table"}

FateOf = Callable[[str], Any]  # key -> what the enhanced copy does with it (runtime.data.enhance.Fate)


@dataclass(frozen=True)
class Format:
    name: str  # what `Shard.format` holds
    title: str  # for people: "WebDataset"
    read: Callable[[Shard, Any], Iterable[Record]]  # (shard, RunOptions) -> one record per key, in order
    suffixes: tuple[str, ...] = ()  # a shard file's name ends with one of these
    find: Callable[[Path], list[Path]] | None = None  # the shards a folder holds (default: its files with `suffixes`)
    sidecar: Callable[[Path], Path | None] | None = None  # a file beside a shard that its reader uses
    write_enhanced: Callable[[Shard, Path, FateOf, Any], int] | None = None  # (shard, out, fate_of, opts)
    count: Callable[[Shard], int | None] | None = None  # a shard's pairs, where cheap to know (progress)
    pairs: bool = False  # a pairs file: one verdicts JSONL, resumed by line

    def accepts(self, path: Path) -> bool:
        name = path.name.lower()
        return name.endswith(tuple(s.lower() for s in self.suffixes)) and not name.endswith(OUTPUT_SUFFIX)

    def shards_in(self, folder: Path) -> list[Path]:
        if self.find is not None:
            return self.find(folder)
        return sorted(p for suffix in self.suffixes for p in folder.glob(f"*{suffix}") if self.accepts(p))

    def shard(self, path: Path) -> Shard:
        return Shard(path, self.name, self.sidecar(path) if self.sidecar else None)


_REGISTRY: dict[str, Format] = {}
_loaded = False


def register(fmt: Format) -> Format:
    """Make `fmt` known to every command; a name already registered is replaced."""
    _REGISTRY[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def formats() -> list[Format]:
    """Every registered format: the built-in ones first, in `BUILTIN` order, then the others."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN.values():
            importlib.import_module(module)
    order = list(BUILTIN)
    return sorted(_REGISTRY.values(), key=lambda f: order.index(f.name) if f.name in order else len(order))


def get(name: str) -> Format:
    for fmt in formats():
        if fmt.name == name:
            return fmt
    raise InputError(f"unknown dataset format {name!r}; known: {', '.join(f.name for f in formats())}")


def _either(words: list[str]) -> str:
    return " or ".join(words) if len(words) < 3 else f"{', '.join(words[:-1])} or {words[-1]}"


def _shard_formats() -> list[Format]:
    return [f for f in formats() if not f.pairs]


def _what() -> tuple[str, str]:
    """(".tar or .parquet", "WebDataset or Parquet"): the shard formats, for messages."""
    shard_formats = _shard_formats()
    return (_either([s for f in shard_formats for s in f.suffixes]), _either([f.title for f in shard_formats]))


COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")


def file_format(path: Path) -> Format | None:
    """The format whose files end like `path`, or None; a compressed tar is refused (InputError)."""
    if path.name.lower().endswith(COMPRESSED_TARS):
        raise InputError(f"{path}: a compressed tar, which is not read (a shard is read member by member, "
                         "gzip cannot seek); decompress it (gunzip, xz -d, zstd -d) and pass the .tar")
    return next((f for f in formats() if f.accepts(path)), None)


def shard_of(path: Path) -> Shard:
    fmt = file_format(path)
    if fmt is None or fmt.pairs:
        suffixes, titles = _what()
        raise InputError(f"{path}: not a shard ({suffixes}); pass {titles} shards")
    return fmt.shard(path)


def folder_shards(folder: Path) -> list[Shard]:
    """The shards of a folder: those of the first format that finds any in it."""
    for fmt in _shard_formats():
        paths = fmt.shards_in(folder)
        if paths:
            return [fmt.shard(p) for p in paths]
    suffixes, titles = _what()
    raise InputError(f"--input {folder}: no {suffixes} shards in this folder; pass a folder of {titles} shards")


def pairs_format(path: Path) -> Format:
    """The format of a pairs file: the pairs format its name ends like, else JSONL."""
    fmt = file_format(path)
    return fmt if fmt is not None and fmt.pairs else get("jsonl")


def count(shard: Shard) -> int | None:
    """A shard's pairs where its format knows them cheaply, else None."""
    fmt = get(shard.format)
    return fmt.count(shard) if fmt.count is not None else None


def read_records(shard: Shard, opts: Any) -> Iterator[Record]:
    """The records of a shard, read by its format (lazily: nothing is opened before the first is asked for)."""
    yield from get(shard.format).read(shard, opts)
