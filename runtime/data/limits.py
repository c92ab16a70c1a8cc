"""Limits that bound a batch run's memory by configuration, not by its input.

Every reader checks them where it makes records: a caption over `caption_chars` characters or
`caption_bytes` UTF-8 bytes is refused as that record's error (the model's memory grows with the
caption's length); a tar member or a Parquet cell over `member_bytes` is refused before it is read
where the container declares its size (a tar header, a one-row Parquet row group's column chunk),
else as soon as it is read; Parquet is read `BATCH_ROWS` rows at a time through a `READ_BUFFER`
stream, never a row group at once. Each has a flag (`runtime.launch.cli`) and the defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass

CAPTION_CHARS = 65_536
CAPTION_BYTES = 256 << 10
MEMBER_BYTES = 64 << 20
READ_BUFFER = 1 << 20  # Parquet: bytes read from the file at a time (a column chunk is never read whole)


@dataclass(frozen=True)
class Limits:
    caption_chars: int = CAPTION_CHARS
    caption_bytes: int = CAPTION_BYTES
    member_bytes: int = MEMBER_BYTES

    def caption_error(self, caption: str) -> str | None:
        """Why `caption` is refused, or None."""
        if len(caption) > self.caption_chars:
            return (f"caption is {len(caption):,} characters, over the limit of {self.caption_chars:,} "
                    "(--max-caption-chars); shorten it or raise the limit")
        if len(caption) * 4 > self.caption_bytes and len(caption.encode("utf-8", "surrogatepass")) > self.caption_bytes:
            return (f"caption is over the limit of {self.caption_bytes:,} UTF-8 bytes (--max-caption-bytes); "
                    "shorten it or raise the limit")
        return None

    def member_error(self, what: str, size: int) -> str | None:
        """Why a member or cell of `size` bytes is refused, or None."""
        if size > self.member_bytes:
            return (f"{what} is {size:,} bytes, over the limit of {self.member_bytes:,} (--max-member-bytes); "
                    "shrink it or raise the limit")
        return None
