"""The one pair type, and the shards an `--input` names.

A `Record` is one image-caption pair, wherever it came from: a line of a pairs JSONL, a row of a
CSV, a key of a WebDataset tar, a row of a Parquet shard, or a `Pair(image, caption, id=...)` built
in Python (`runtime.scorer.Pair` is this class). It holds the image (a path, encoded bytes or a
decoded image), the caption, the id as the input gave it, the key results are joined on, the file
it came from and its line there, DataComp's uid; or, when the input cannot make a pair (bad JSON,
corrupt member, missing caption, value of the wrong type, truncated file), the same key with
`error` set, so every input record still gets exactly one output record. Results are joined on
`key`, never on position: shards have gaps.

Which formats exist is `runtime.data.formats`' registry; `find_shards` asks it.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import InputError

OUTPUT_SUFFIX = ".aitqe.parquet"  # a verdicts file, never an input shard


class ShardError(InputError):
    """A shard that cannot be read at all (or whose columns cannot be found): it gets no output, is
    reported, and is tried again on the next run."""


@dataclass
class Record:
    image: Any = None  # a path, encoded image bytes, or a PIL image; None when `error` is set
    caption: str | None = None
    id: Any = None  # the id as the input gave it (a JSONL int stays an int); a shard's key
    max_new_tokens: int | None = None  # this pair's token budget, if lower than the call's (benchmarks)
    key: str | None = None  # what outputs are joined on: the id as text, a shard's key, or `line N`
    source: str | None = None  # the file it came from (a shard's or pairs file's name)
    line: int | None = None  # its line (JSONL) or row (CSV) in that file, from 1
    uid: str | None = None  # DataComp's uid, when the shard has one
    error: str | None = None  # why the input gave no pair: the record is not scored


Pair = Record  # the one pair type: `Pair(image, caption, id=...)`; the image a path, a decoded image or encoded bytes


def keyed(key: str, source: str, **fields) -> Record:
    """A shard's record: its key is also the id the scorer's verdict carries."""
    return Record(key=key, id=key, source=source, **fields)


def keyed_by_id(rec: Record, where: str) -> Record:
    """A pairs file's record keyed by its id, or by `where` (`line 3`) when it has no usable one."""
    rec.key = str(rec.id) if rec.id is not None and rec.error is None else where
    return rec


@dataclass(frozen=True)
class Shard:
    path: Path
    format: str  # a registered format's name: "webdataset", "parquet", "jsonl", "csv", ...
    meta: Path | None = field(default=None, compare=False)  # a sidecar file (img2dataset's metadata Parquet)

    @property
    def name(self) -> str:
        """The shard's stem (`00000` for `00000.tar`, the folder's name for a folder): outputs are named after it."""
        return self.path.name[: len(self.path.name) - len(self.path.suffix)] if self.path.suffix else self.path.name


def _expand_braces(pattern: str) -> list[str]:
    try:
        from braceexpand import braceexpand
    except ImportError:
        raise InputError("brace patterns need braceexpand: pip install 'aitqe-edge[data]'") from None
    return list(braceexpand(pattern))


def is_shard_input(spec: str) -> bool:
    """Whether `--input` names shards (folder, brace pattern, comma list, a shard file) rather than a pairs file."""
    from runtime.data.formats import file_format

    fmt = file_format(Path(spec))
    shard_file = fmt is not None and not fmt.pairs
    if Path(spec).is_file():
        return shard_file
    return Path(spec).is_dir() or "{" in spec or "," in spec or shard_file


def find_shards(spec: str) -> list[Shard]:
    """Shards of a folder, a brace pattern (`data/{00000..00099}.tar`), a comma list or one file.

    A folder's shards are those of the first registered format that finds any in it (a folder
    holding .tar files is a WebDataset, whose .parquet files are img2dataset's metadata; else its
    .parquet files are the shards). Outputs of this tool are never taken as input.
    """
    from runtime.data.formats import folder_shards, shard_of

    if Path(spec).is_dir():
        shards = folder_shards(Path(spec))
    else:
        names = [n for part in spec.split(",") if part for n in _expand_braces(part)]
        paths = []
        for n in names:
            hits = sorted(glob.glob(n)) if glob.has_magic(n) else [n]
            paths += [Path(h) for h in hits]
        missing = [p for p in paths if not p.is_file() and not p.is_dir()]
        if missing or not paths:
            raise InputError(f"--input {spec}: no such shard {missing[0] if missing else spec}; "
                             "check the path or pattern")
        shards = [s for p in paths for s in (folder_shards(p) if p.is_dir() else [shard_of(p)])]
    seen: dict[str, Path] = {}
    for s in shards:
        if s.name in seen and seen[s.name] != s.path:
            raise InputError(f"--input: two shards named {s.name} ({seen[s.name]}, {s.path}); outputs are named "
                             "after the shard, so score them into different --output folders")
        seen[s.name] = s.path
    return list({s.path: s for s in shards}.values())


def pick(shards: list[Shard], index: int, count: int) -> list[Shard]:
    """This process's shards when `count` processes split the list (`--shard-index i --num-shards n`)."""
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard-index {index} --num-shards {count}: need 0 <= index < count")
    return shards[index::count]
