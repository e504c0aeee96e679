"""Compressed source files (.gz, .zst): which compression a name has, a raw byte stream, and the
truncation check DuckDB does not make."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

from core.errors import InputError

COMPRESSION = (".gz", ".zst")


def strip_compression(name: str) -> tuple[str, str | None]:
    low = name.lower()
    for ext in COMPRESSION:
        if low.endswith(ext):
            return low[: -len(ext)], ext
    return low, None


def open_raw(path: Path):
    _, comp = strip_compression(path.name)
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".zst":
        import zstandard

        # Buffered: zstandard's own reader cannot be read line by line.
        return io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        )
    return open(path, "rb")


def check_zstd(path: Path) -> None:
    """DuckDB reads a zstd file cut at a block boundary as if whole: check that every frame ends."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    frame, fed = dctx.decompressobj(), False
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                while chunk:
                    frame.decompress(chunk)
                    fed = True
                    if not frame.eof:
                        break
                    chunk = frame.unused_data
                    frame, fed = dctx.decompressobj(), False
    except zstandard.ZstdError as exc:
        raise InputError(
            f"{path}: truncated or corrupt compressed file ({exc}) — re-create it"
        ) from exc
    if fed and not frame.eof:
        raise InputError(
            f"{path}: truncated or corrupt compressed file (the zstd stream ends early)"
        )
