"""Parquet shards (img2dataset's `parquet` output, Hugging Face datasets, DataComp): read pairs,
write the enhanced copy. Read and written with pyarrow, the reference Parquet implementation.

Columns are found by name, each overridable: the key (`key`, then `uid`, then `id`), the image
(encoded bytes in `jpg`/`jpeg`/`png`/`webp`/`image`/`image_bytes`, a path string, or HF's `image`
struct with `bytes` and `path`) and the caption (`txt`, `caption`, `text`). A relative image path is
taken relative to the shard's folder. A value of the wrong type or a null gives an error record
for that row; a row group that cannot be decoded gives error records for its keys (keyed `row group
G row R` when not even its keys can be read); the other rows are scored. Sizes are bounded by
`runtime.data.limits`: a shard is read BATCH_ROWS rows at a time through a READ_BUFFER stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runtime.data.formats import FateOf, Format, register
from runtime.data.limits import READ_BUFFER, Limits
from runtime.data.records import Record, Shard, ShardError, keyed

KEY_COLUMNS = ("key", "uid", "id")
IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "image_bytes", "image_path", "path")
CAPTION_COLUMNS = ("txt", "caption", "text")
BATCH_ROWS = 256


@dataclass(frozen=True)
class Columns:
    """Column names chosen by the user (None: the first default present)."""

    key: str | None = None
    image: str | None = None
    caption: str | None = None


def _pq():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ShardError("Parquet shards need pyarrow: pip install 'aitqe-edge[data]'") from None
    return pq


def _choose(names: list[str], given: str | None, defaults: tuple[str, ...], what: str, flag: str,
            path: Path) -> str:
    if given is not None:
        if given not in names:
            raise ShardError(f"{path}: no column {given!r} ({what}); columns are {', '.join(names)}")
        return given
    for name in defaults:
        if name in names:
            return name
    raise ShardError(f"{path}: no {what} column (looked for {', '.join(defaults)}); pass {flag} NAME "
                     f"(columns are {', '.join(names)})")


def resolve(path: Path, columns: Columns) -> tuple[str, str, str, str | None]:
    """(key, image, caption, uid or None) column names of a shard, or ShardError."""
    try:
        names = _pq().ParquetFile(path).schema_arrow.names
    except ShardError:
        raise
    except Exception as e:
        raise ShardError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())}); "
                         "re-download or re-write the shard") from None
    key = _choose(names, columns.key, KEY_COLUMNS, "key", "--key-column", path)
    image = _choose(names, columns.image, IMAGE_COLUMNS, "image", "--image-column", path)
    caption = _choose(names, columns.caption, CAPTION_COLUMNS, "caption", "--caption-column", path)
    return key, image, caption, ("uid" if "uid" in names else None)


def _image(value: object, base: Path) -> tuple[bytes | str | None, str | None]:
    if isinstance(value, dict):  # HF datasets' Image feature
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str) and value:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p), None
    if value is None:
        return None, "image is null; the row has no image"
    return None, f"image is {type(value).__name__}, not bytes or a path; pass --image-column NAME"


def _record(key: object, image: object, caption: object, uid: object, shard: Shard, limits: Limits) -> Record:
    rec = keyed(str(key), shard.path.name, uid=None if uid is None else str(uid))
    rec.image, error = _image(image, shard.path.parent)
    if not isinstance(caption, str):
        error = error or ("caption is null" if caption is None else
                          f"caption is {type(caption).__name__}, not text; pass --caption-column NAME")
    else:
        rec.caption = caption
        error = error or limits.caption_error(caption)
    if isinstance(rec.image, bytes):
        error = error or limits.member_error("image cell", len(rec.image))
    rec.error = error
    if error:
        rec.image = None
    return rec


def open_bounded(path: Path):
    """The shard, read through a READ_BUFFER stream (pyarrow's default pre-buffers a row group whole)."""
    return _pq().ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False)


def _too_big(pf, group: int, cols: list[str], limits: Limits) -> str | None:
    """Why a row group of one row is refused before reading: a column chunk over the member limit."""
    meta = pf.metadata.row_group(group)
    if meta.num_rows != 1:
        return None
    sizes = {meta.column(i).path_in_schema.split(".")[0]: 0 for i in range(meta.num_columns)}
    for i in range(meta.num_columns):
        sizes[meta.column(i).path_in_schema.split(".")[0]] += meta.column(i).total_uncompressed_size
    return next((e for c in cols if (e := limits.member_error(f"column {c}", sizes.get(c, 0)))), None)


def _lost(pf, shard: Shard, group: int, key: str, done: int, reason: str) -> Iterator[Record]:
    """Error records for the rows of a row group that could not be read (from row `done` on): keyed by
    their keys when those can be read, else `row group G row R`."""
    try:
        keys = [str(k) for k in pf.read_row_group(group, columns=[key], use_threads=False).column(key).to_pylist()]
    except Exception:
        keys = [f"row group {group} row {r}" for r in range(pf.metadata.row_group(group).num_rows)]
    for k in keys[done:]:
        yield keyed(k, shard.path.name, error=f"row group {group} cannot be read ({reason}); re-write the shard")


def read_shard(shard: Shard, columns: Columns = Columns(), limits: Limits = Limits()) -> Iterator[Record]:
    """One record per row, BATCH_ROWS at a time through a READ_BUFFER stream (a row group is never
    read whole); a row group that cannot be read costs only its own rows (error records)."""
    key, image, caption, uid = resolve(shard.path, columns)
    cols = [c for c in dict.fromkeys((key, image, caption, uid)) if c]
    pf = open_bounded(shard.path)
    seen: set[str] = set()
    for group in range(pf.num_row_groups):
        done = 0
        try:
            refused = _too_big(pf, group, [image, caption], limits)
            if refused:
                raise ValueError(refused)
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=cols,
                                          use_threads=False):
                d = batch.to_pydict()
                for i in range(batch.num_rows):
                    rec = _record(d[key][i], d[image][i], d[caption][i], d[uid][i] if uid else None, shard, limits)
                    done += 1
                    if d[key][i] is None:
                        rec.error = "key is null; every row needs a key"
                    elif rec.key in seen:
                        rec.error, rec.image = f"key {rec.key} appears twice in the shard; keys must be unique", None
                    seen.add(rec.key)
                    yield rec
        except Exception as e:
            for rec in _lost(pf, shard, group, key, done, " ".join(str(e).split())):
                seen.add(rec.key)
                yield rec


def write_enhanced(shard: Shard, out: Path, fate_of: FateOf, columns: Columns = Columns()) -> int:
    """Copy the shard to `out` as `fate_of(key)` (`runtime.data.enhance.Fate`) says: dropped rows left
    out, captions replaced where it gives one.

    Adds (or overwrites) `original_caption` and `aitqe_overall`. Row groups that cannot be decoded
    are left out. Returns the number of captions replaced.
    """
    import pyarrow as pa

    pq = _pq()
    key, _, caption, _ = resolve(shard.path, columns)
    pf = open_bounded(shard.path)
    base = pf.schema_arrow
    base = base.remove(base.get_field_index("original_caption")) if "original_caption" in base.names else base
    base = base.remove(base.get_field_index("aitqe_overall")) if "aitqe_overall" in base.names else base
    textual = pa.types.is_string(base.field(caption).type) or pa.types.is_large_string(base.field(caption).type)
    schema = base.append(pa.field("original_caption", pa.string())).append(pa.field("aitqe_overall", pa.int32()))
    replaced = 0
    with pq.ParquetWriter(out, schema) as writer:
        for group in range(pf.num_row_groups):
            try:
                table = pf.read_row_group(group).select(base.names)
            except Exception:
                continue
            fates = [fate_of(str(k)) for k in table.column(key).to_pylist()]
            table = table.filter(pa.array([not f.dropped for f in fates], pa.bool_()))
            fates = [f for f in fates if not f.dropped]
            originals = table.column(caption).to_pylist()
            captions = list(originals)
            if textual:
                for i, f in enumerate(fates):
                    if f.caption is not None:
                        captions[i], replaced = f.caption, replaced + 1
                table = table.set_column(base.get_field_index(caption), base.field(caption),
                                         pa.array(captions, base.field(caption).type))
            table = table.append_column(schema.field("original_caption"),
                                        pa.array([c if isinstance(c, str) else None for c in originals], pa.string()))
            table = table.append_column(schema.field("aitqe_overall"), pa.array([f.overall for f in fates], pa.int32()))
            writer.write_table(table)
    return replaced


def count(shard: Shard) -> int | None:
    """The shard's rows, from its footer."""
    try:
        return _pq().ParquetFile(shard.path).metadata.num_rows
    except Exception:  # an unreadable footer is the reader's error to report
        return None


FORMAT = register(Format(
    "parquet", "Parquet", lambda shard, opts: read_shard(shard, opts.columns, opts.limits), (".parquet",), count=count,
    write_enhanced=lambda shard, out, fate_of, opts: write_enhanced(shard, out, fate_of, opts.columns)))
