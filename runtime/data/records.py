"""The one record type every reader yields, and the shards an `--input` names.

A `Record` is one pair of a shard: its key (img2dataset's `key`, DataComp's `uid`, a JSONL/CSV
`id`), the image (encoded bytes, or a file path), the caption, and the shard it came from; or, when
the shard's data cannot make a pair (corrupt member, missing caption, value of the wrong type,
truncated file), the same key with `error` set, so every key still gets exactly one output row.
Results are joined on `key`, never on position: shards have gaps.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import InputError

SHARD_SUFFIXES = (".tar", ".parquet")
OUTPUT_SUFFIX = ".aitqe.parquet"  # a verdicts file, never an input shard


class ShardError(InputError):
    """A shard that cannot be read at all (or whose columns cannot be found): it gets no output, is
    reported, and is tried again on the next run."""


@dataclass
class Record:
    key: str
    shard: str
    image: bytes | str | None = None  # encoded image bytes, or a file path
    caption: str | None = None
    uid: str | None = None  # DataComp's uid, when the shard has one
    error: str | None = None


@dataclass(frozen=True)
class Shard:
    path: Path
    format: str  # "webdataset" | "parquet"
    meta: Path | None = field(default=None, compare=False)  # img2dataset's sibling metadata Parquet

    @property
    def name(self) -> str:
        """The shard's stem (`00000` for `00000.tar`): outputs are named after it."""
        return self.path.name[: -len(self.path.suffix)]


def _expand_braces(pattern: str) -> list[str]:
    try:
        from braceexpand import braceexpand
    except ImportError:
        raise InputError("brace patterns need braceexpand: pip install 'aitqe-edge[data]'") from None
    return list(braceexpand(pattern))


def _shard(path: Path) -> Shard:
    if path.suffix == ".tar":
        meta = path.with_suffix(".parquet")
        return Shard(path, "webdataset", meta if meta.is_file() else None)
    if path.suffix == ".parquet" and not path.name.endswith(OUTPUT_SUFFIX):
        return Shard(path, "parquet")
    raise InputError(f"{path}: not a shard (.tar or .parquet); pass WebDataset or Parquet shards")


def is_shard_input(spec: str) -> bool:
    """Whether `--input` names shards (folder, brace pattern, .tar, .parquet) rather than a pairs file."""
    if Path(spec).is_file():
        return spec.endswith(SHARD_SUFFIXES)
    return Path(spec).is_dir() or "{" in spec or "," in spec or spec.endswith(SHARD_SUFFIXES)


def find_shards(spec: str) -> list[Shard]:
    """Shards of a folder, a brace pattern (`data/{00000..00099}.tar`), a comma list or one file.

    A folder holding .tar files is a WebDataset (its .parquet files are img2dataset's metadata);
    otherwise its .parquet files are the shards. Outputs of this tool are never taken as input.
    """
    if Path(spec).is_dir():
        folder = Path(spec)
        tars = sorted(folder.glob("*.tar"))
        paths = tars or sorted(p for p in folder.glob("*.parquet") if not p.name.endswith(OUTPUT_SUFFIX))
        if not paths:
            raise InputError(f"--input {spec}: no .tar or .parquet shards in this folder; "
                             "pass a folder of WebDataset or Parquet shards")
    else:
        names = [n for part in spec.split(",") if part for n in _expand_braces(part)]
        paths = []
        for n in names:
            hits = sorted(glob.glob(n)) if glob.has_magic(n) else [n]
            paths += [Path(h) for h in hits]
        missing = [p for p in paths if not p.is_file()]
        if missing or not paths:
            raise InputError(f"--input {spec}: no such shard {missing[0] if missing else spec}; "
                             "check the path or pattern")
    shards = [_shard(p) for p in paths]
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
