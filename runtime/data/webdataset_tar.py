"""WebDataset tar shards (img2dataset's `webdataset` output): read pairs, write the enhanced copy.

A shard holds members `KEY.EXT` (KEY up to the first dot of the file name), the members of one key
next to each other: an image (`.jpg/.jpeg/.png/.webp`), the caption (`.txt`, or a field of
`KEY.json` with `caption_field`) and img2dataset's `.json` metadata.

Read with the standard library's `tarfile` rather than the `webdataset` package: we need every
damaged key reported by name and the rest of the shard kept, and `tarfile` with `ignore_zeros`
skips a corrupt header and finds the next good member, where webdataset's iterators stop the
shard (or drop the key silently with a handler). A tar cut short (killed download) ends early; its
lost keys are known only from img2dataset's sibling `SHARD.parquet` metadata (rows with status
`success`), which, when present, turns each of them into an error record. Every key gets exactly
one record: a key with a link or device member, a member over the size limit (its declared size,
checked before reading: `runtime.data.limits`) or a second sample of the same key (a repeated
extension starts it, adjacent or not: never merged) is an error record. Written shards are plain
tars in the same layout, member names made safe (no `..`, no leading `/`), so `webdataset` and
img2dataset readers open them and extracting them stays inside the folder.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from runtime.data.formats import FateOf, Format, register
from runtime.data.limits import Limits
from runtime.data.records import Record, Shard, ShardError, keyed

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
MISSING_FROM_TAR = "listed in the shard's metadata but not in the tar (truncated download or corrupt member); re-download the shard"


@dataclass
class Group:
    """The members of one key, in tar order; `error` when the tar broke inside them, or a member
    is refused (over the size limit, a link or device rather than a file)."""

    key: str
    members: list[tuple[tarfile.TarInfo, bytes]] = field(default_factory=list)
    error: str | None = None
    exts: set[str] = field(default_factory=set)  # every member's extension, files or not

    def get(self, ext: str) -> bytes | None:
        for info, data in self.members:
            if _split(info.name)[1].lower() == ext:
                return data
        return None


def _split(name: str) -> tuple[str, str]:
    """`dir/00001.jpg` -> (`dir/00001`, `jpg`); `a/b.c.txt` -> (`a/b`, `c.txt`)."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def _read_member(tf: tarfile.TarFile, info: tarfile.TarInfo, group: Group, limits: Limits) -> None:
    """Add one member's bytes to `group`, or set its error (refused before reading, or cut short)."""
    if not info.isfile():
        group.error = group.error or (f"member {info.name} is a link or device, not a file; "
                                      "store the file itself in the shard")
        return
    refused = limits.member_error(f"member {info.name}", info.size)
    if refused:
        group.error = group.error or refused
        return
    try:
        data = tf.extractfile(info).read()
        if len(data) != info.size:
            raise EOFError(f"{len(data)} of {info.size} bytes")
        group.members.append((info, data))
    except (tarfile.TarError, OSError, EOFError) as e:
        group.error = f"member {info.name} is cut short ({e}): truncated tar; re-download the shard"


def iter_groups(path: Path, limits: Limits = Limits()) -> Iterator[Group]:
    """Key groups of a tar, in order; a group the tar broke inside of carries `error`. A member whose
    extension its key already has starts a new group of the same key (a duplicate, never merged)."""
    group: Group | None = None
    with tarfile.open(path, "r:", ignore_zeros=True) as tf:
        while True:
            try:
                info = tf.next()
            except (tarfile.TarError, OSError, EOFError) as e:
                if group is not None:
                    group.error = group.error or f"the tar breaks after this key's members ({e}); re-download the shard"
                break
            if info is None:
                break
            if info.isdir():
                continue
            key, ext = _split(info.name)
            if not ext:
                continue
            if group is None or key != group.key or ext.lower() in group.exts:
                if group is not None:
                    yield group
                group = Group(key)
            group.exts.add(ext.lower())
            _read_member(tf, info, group, limits)
    if group is not None:
        yield group


def _expected_keys(meta: Path | None) -> list[str]:
    """Keys img2dataset downloaded into the shard (its metadata rows with status success)."""
    if meta is None:
        return []
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(meta, columns=None)
    except Exception:  # unreadable metadata: the tar alone says what is there
        return []
    if "key" not in table.column_names:
        return []
    keys = table.column("key").to_pylist()
    status = table.column("status").to_pylist() if "status" in table.column_names else ["success"] * len(keys)
    return [str(k) for k, s in zip(keys, status) if k is not None and s == "success"]


def _caption(group: Group, caption_field: str | None) -> tuple[str | None, str | None]:
    """(caption, error) of a group."""
    if caption_field:
        raw = group.get("json")
        if raw is None:
            return None, f"no {group.key}.json, which should hold the caption field {caption_field!r}"
        try:
            value = json.loads(raw.decode("utf-8")).get(caption_field)
        except (UnicodeDecodeError, ValueError, AttributeError):
            return None, f"{group.key}.json is not a JSON object; the caption field {caption_field!r} cannot be read"
        if not isinstance(value, str):
            return None, f"{group.key}.json has no text field {caption_field!r}; pass the caption field's name"
        return value, None
    raw = group.get("txt")
    if raw is None:
        return None, f"no caption: {group.key}.txt is missing; add it or pass --caption-field NAME for a .json field"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"{group.key}.txt is not valid UTF-8 (byte {e.start}); re-encode the caption"


def _uid(group: Group) -> str | None:
    raw = group.get("json")
    try:
        uid = json.loads(raw.decode("utf-8")).get("uid") if raw else None
    except (UnicodeDecodeError, ValueError, AttributeError):
        return None
    return str(uid) if uid is not None else None


def read_shard(shard: Shard, caption_field: str | None = None, limits: Limits = Limits()) -> Iterator[Record]:
    """One record per key of the tar (and per key its metadata lists that the tar lost)."""
    seen: set[str] = set()
    for group in iter_groups(shard.path, limits):
        rec = keyed(group.key, shard.path.name, uid=_uid(group))
        if group.key in seen:
            rec.error = f"key {group.key} appears twice in the shard; keys must be unique"
            yield rec
            continue
        seen.add(group.key)
        image = next((d for ext in IMAGE_EXTS if (d := group.get(ext)) is not None), None)
        rec.caption, caption_error = _caption(group, caption_field)
        if group.error:
            rec.error = group.error
        elif image is None:
            rec.error = f"no image for key {group.key} (.jpg/.jpeg/.png/.webp member missing)"
        else:
            rec.image, rec.error = image, caption_error or (limits.caption_error(rec.caption) if rec.caption else None)
        yield rec
    expected = _expected_keys(shard.meta)
    if not seen and not expected and shard.path.stat().st_size > 0:
        raise ShardError(f"{shard.path}: no member could be read (not a tar, or damaged from the start); "
                         "re-download the shard")
    for key in expected:
        if key not in seen:
            seen.add(key)
            yield keyed(key, shard.path.name, error=MISSING_FROM_TAR)


def safe_name(name: str) -> str:
    """A member name that extracts inside its folder: no leading `/`, no `..` or `.` parts."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


def _member(info: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    new = tarfile.TarInfo(safe_name(info.name))
    new.size, new.mtime, new.mode = len(data), info.mtime, info.mode
    new.uname, new.gname, new.uid, new.gid = info.uname, info.gname, info.uid, info.gid
    return new, io.BytesIO(data)


def write_enhanced(shard: Shard, out: Path, fate_of: FateOf, caption_field: str | None = None,
                   limits: Limits = Limits()) -> int:
    """Copy the shard's keys to `out` as `fate_of(key)` (`runtime.data.enhance.Fate`) says: dropped
    keys left out, captions replaced where it gives one.

    The caption is the same in `KEY.txt` and in `KEY.json`'s `caption` (or the `caption_field`),
    the input caption under `original_caption`, the score under `aitqe_overall` (the .json created
    if absent). A kept key that failed is copied as it is; keys the tar broke inside of are left
    out. Returns the number of captions replaced.
    """
    replaced = 0
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for group in iter_groups(shard.path, limits):
            fate = fate_of(group.key)
            if group.error or fate.dropped:
                continue
            caption, _ = _caption(group, caption_field)
            meta_raw = group.get("json")
            try:
                meta = json.loads(meta_raw.decode("utf-8")) if meta_raw is not None else {}
            except (UnicodeDecodeError, ValueError):
                meta = None
            if not isinstance(meta, dict) or caption is None:  # nowhere to keep the original: copy as is
                for info, data in group.members:
                    tf.addfile(*_member(info, data))
                continue
            replaced += fate.caption is not None
            final = caption if fate.caption is None else fate.caption
            meta.update({caption_field or "caption": final, "original_caption": caption,
                         "aitqe_overall": fate.overall})
            json_name = None
            for info, data in group.members:
                ext = _split(info.name)[1].lower()
                if ext == "json":
                    json_name, data = info.name, json.dumps(meta, ensure_ascii=False).encode("utf-8")
                elif ext == "txt" and not caption_field:
                    data = final.encode("utf-8")
                tf.addfile(*_member(info, data))
            if json_name is None:
                last = group.members[-1][0]
                info = tarfile.TarInfo(safe_name(f"{group.key}.json"))
                info.mtime, info.mode = last.mtime, last.mode
                tf.addfile(*_member(info, json.dumps(meta, ensure_ascii=False).encode("utf-8")))
    return replaced


def count(shard: Shard) -> int | None:
    """The shard's pairs, from img2dataset's metadata (its rows with status success), if there."""
    return len(_expected_keys(shard.meta)) or None


def _metadata(path: Path) -> Path | None:
    """img2dataset's sibling metadata (`00000.parquet` beside `00000.tar`), if there."""
    meta = path.with_suffix(".parquet")
    return meta if meta.is_file() else None


FORMAT = register(Format(
    "webdataset", "WebDataset", lambda shard, opts: read_shard(shard, opts.caption_field, opts.limits), (".tar",),
    sidecar=_metadata, count=count,
    write_enhanced=lambda shard, out, fate_of, opts: write_enhanced(shard, out, fate_of, opts.caption_field,
                                                                opts.limits)))
