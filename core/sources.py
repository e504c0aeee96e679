"""Readers that turn any supported source into a stream of Arrow record batches.

File formats go through DuckDB's readers (they stream, decompress .gz/.zst and infer types); text
folders, `save_to_disk` datasets and hub ids go through Python/`datasets`. Every reader yields
batches with the source's own columns, in the source's own order.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from core.errors import InputError

BATCH_ROWS = 8192
_COMPRESSION = (".gz", ".zst")
_JSON = (".jsonl", ".json", ".ndjson")
_CSV = (".csv", ".tsv")


class ReplacementCounter:
    """Decodes bytes as UTF-8, replacing invalid sequences with U+FFFD and counting the bytes."""

    def __init__(self) -> None:
        self.replaced_bytes = 0
        self._name = f"infoprune-count-{id(self)}"
        codecs.register_error(self._name, self._handle)

    def _handle(self, err: UnicodeDecodeError):
        self.replaced_bytes += err.end - err.start
        return "\ufffd", err.end

    def decode(self, data: bytes) -> str:
        return data.decode("utf-8", errors=self._name)

    def incremental(self):
        return codecs.getincrementaldecoder("utf-8")(errors=self._name)


@dataclass
class Source:
    """An opened source: its kind, a batch iterator factory and what decoding had to repair."""

    kind: str
    location: str
    batches: Callable[[], Iterator[pa.RecordBatch]]
    counter: ReplacementCounter = field(default_factory=ReplacementCounter)
    cleanup: list[Path] = field(default_factory=list)

    def close(self) -> None:
        for p in self.cleanup:
            with _suppress():
                p.unlink()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def _strip_compression(name: str) -> tuple[str, str | None]:
    low = name.lower()
    for ext in _COMPRESSION:
        if low.endswith(ext):
            return low[: -len(ext)], ext
    return low, None


def detect(source: str, split: str | None, limit: int | None) -> Source:
    """Work out what SOURCE is and return a Source, or an InputError that says what to pass."""
    if any(ch in source for ch in "*?["):
        return _from_glob(source, limit)
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_directory(path, split, limit)
    if path.is_file():
        return _from_file(path, limit)
    if _looks_like_hub_id(source):
        return _from_hub(source, split, limit)
    raise InputError(f"no such file or directory: {source}")


def _looks_like_hub_id(source: str) -> bool:
    return (
        bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", source))
        and not source.startswith(".")
        and Path(source).suffix.lower() not in {*_JSON, *_CSV, ".parquet", ".txt", *_COMPRESSION}
    )


def _from_glob(pattern: str, limit: int | None) -> Source:
    files = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not files:
        raise InputError(f"no files match {pattern}")
    kinds = {_file_kind(Path(f)) for f in files}
    if len(kinds) != 1:
        raise InputError(f"{pattern} matches files of several formats; match one format only")
    kind = kinds.pop()
    if kind == "parquet":
        return _duckdb_source("parquet", pattern, files, limit)
    if kind == "json":
        return _duckdb_source("json", pattern, files, limit)
    if kind in ("csv", "tsv"):
        return _duckdb_source(kind, pattern, files, limit)
    raise InputError(f"{pattern}: a glob of {kind} files is not supported; use a directory")


def _file_kind(path: Path) -> str:
    base, _ = _strip_compression(path.name)
    if base.endswith(_JSON):
        return "json"
    if base.endswith(_CSV):
        return base[-3:]
    if base.endswith(".parquet"):
        return "parquet"
    if base.endswith(".txt"):
        return "txt"
    return "unknown"


def _from_file(path: Path, limit: int | None) -> Source:
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty — nothing to ingest")
    kind = _file_kind(path)
    if kind == "unknown":
        raise InputError(
            f"{path}: unknown format '{path.suffix}' — use .jsonl/.json/.csv/.tsv/.parquet "
            "(optionally .gz or .zst), a folder of .txt files or a save_to_disk folder"
        )
    if kind == "txt":
        raise InputError(f"{path}: a single .txt file — pass the folder of .txt files instead")
    return _duckdb_source(kind, str(path), [str(path)], limit)


def _from_directory(path: Path, split: str | None, limit: int | None) -> Source:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        return _from_saved_hf(path, split, limit)
    parquet = sorted(str(p) for p in path.rglob("*.parquet"))
    if parquet:
        return _duckdb_source("parquet", str(path), parquet, limit)
    txt = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if txt:
        return _text_folder(path, txt, limit)
    raise InputError(
        f"{path}: folder holds no .parquet or .txt files and is not a save_to_disk dataset"
    )


def _duckdb_list(files: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _duckdb_source(kind: str, location: str, files: list[str], limit: int | None) -> Source:
    for f in files:
        if f.lower().endswith(".zst"):
            _check_zstd(Path(f))
    src = Source(kind=kind, location=location, batches=lambda: iter(()))

    def sql_for(paths: list[str]) -> str:
        lst = _duckdb_list(paths)
        if kind == "parquet":
            reader = f"read_parquet({lst})"
        elif kind == "json":
            reader = f"read_json({lst}, format='auto', union_by_name=true)"
        else:
            # A fixed delimiter: the sniffer takes commas inside TSV text for the separator.
            delim = "\t" if kind == "tsv" else ","
            reader = f"read_csv({lst}, union_by_name=true, header=true, delim='{delim}')"
        return f"SELECT * FROM {reader}" + (f" LIMIT {int(limit)}" if limit else "")

    repaired: list[str] = []

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from _read_duckdb(sql_for(repaired or files))
        except _InvalidUtf8:
            if kind == "parquet" or repaired:
                raise InputError(
                    f"{location}: text is not valid UTF-8 and cannot be repaired"
                ) from None
            # Repair a copy of each file (invalid bytes -> U+FFFD, counted); the caller restarts.
            repaired.extend(str(_repaired_copy(Path(p), src)) for p in files)
            raise RetryWithRepair() from None

    src.batches = batches
    return src


class _InvalidUtf8(Exception):
    pass


class RetryWithRepair(Exception):
    """The source was repaired after some batches were read: start the ingest again."""


def _read_duckdb(sql: str) -> Iterator[pa.RecordBatch]:
    con = duckdb.connect()
    try:
        try:
            reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
            yield from reader
        except duckdb.Error as exc:
            _raise_readable(exc)
    finally:
        con.close()


def _raise_readable(exc: duckdb.Error):
    text = str(exc)
    low = text.lower()
    first = text.splitlines()[0]
    if "utf-8" in low or "unicode" in low:
        raise _InvalidUtf8() from exc
    if "gzip" in low or "zstd" in low or "decompress" in low:
        raise InputError(f"truncated or corrupt compressed file ({first}) — re-create it") from exc
    if "malformed json" in low or "json" in low and "parse" in low:
        m = re.search(r'file "([^"]+)".*?line (\d+)', text)
        where = f"{m.group(1)} line {m.group(2)}" if m else first
        raise InputError(f"broken JSON at {where} — fix or remove that line") from exc
    if "parquet" in low or "magic bytes" in low:
        raise InputError(f"not a readable Parquet file ({first}) — it is corrupt or truncated")
    if "csv" in low:
        raise InputError(f"cannot parse CSV ({first})") from exc
    raise InputError(f"cannot read the source: {first}") from exc


def _open_raw(path: Path):
    _, comp = _strip_compression(path.name)
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".zst":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def _check_zstd(path: Path) -> None:
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


def _repaired_copy(path: Path, src: Source) -> Path:
    base, _ = _strip_compression(path.name)
    fd, tmp = tempfile.mkstemp(prefix="infoprune-utf8-", suffix="-" + base)
    out_path = Path(tmp)
    src.cleanup.append(out_path)
    decoder = src.counter.incremental()
    try:
        with _open_raw(path) as raw, os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            while chunk := raw.read(1 << 22):
                out.write(decoder.decode(chunk))
            out.write(decoder.decode(b"", final=True))
    except (EOFError, OSError) as exc:
        raise InputError(f"{path}: truncated or corrupt compressed file ({exc})") from exc
    return out_path


def _text_folder(root: Path, files: list[Path], limit: int | None) -> Source:
    src = Source(kind="txt-folder", location=str(root), batches=lambda: iter(()))
    if limit:
        files = files[:limit]

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(files), BATCH_ROWS // 8):
            chunk = files[start : start + BATCH_ROWS // 8]
            yield pa.record_batch(
                {
                    "path": [str(p.relative_to(root)) for p in chunk],
                    "text": [src.counter.decode(p.read_bytes()) for p in chunk],
                }
            )

    src.batches = batches
    return src


def _from_saved_hf(path: Path, split: str | None, limit: int | None) -> Source:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for a damaged folder
        raise InputError(f"{path}: cannot load the save_to_disk dataset ({exc})") from exc
    ds = _pick_split(ds, split, str(path))
    return _hf_source("hf-disk", str(path), ds, limit)


def _from_hub(name: str, split: str | None, limit: int | None) -> Source:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split or "train", streaming=True)
    except Exception as exc:  # network, auth and missing-dataset errors all land here
        raise InputError(
            f"cannot load '{name}' as a file, folder or hub dataset ({str(exc).splitlines()[0]})"
        ) from exc
    return _hf_source("hf-hub", name, ds, limit)


def _pick_split(ds, split: str | None, where: str):
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if split is None:
            if len(names) == 1:
                return ds[names[0]]
            if "train" in names:
                return ds["train"]
            raise InputError(f"{where} has splits {', '.join(names)} — pass --split NAME")
        if split not in ds:
            raise InputError(f"{where} has no split '{split}'; splits are {', '.join(names)}")
        return ds[split]
    if split is not None:
        raise InputError(f"{where} is a single dataset without splits — drop --split")
    return ds


def _hf_source(kind: str, location: str, ds, limit: int | None) -> Source:
    src = Source(kind=kind, location=location, batches=lambda: iter(()))

    def batches() -> Iterator[pa.RecordBatch]:
        seen = 0
        for tbl in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
            if limit and seen + tbl.num_rows > limit:
                tbl = tbl.slice(0, limit - seen)
            seen += tbl.num_rows
            yield from tbl.to_batches()
            if limit and seen >= limit:
                return

    src.batches = batches
    return src


def read_text_bytes(data: bytes, counter: ReplacementCounter) -> str:
    """Decode one blob the way every reader does (used for binary text columns)."""
    return counter.decode(data)
