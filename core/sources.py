"""Readers that turn any supported source into a stream of Arrow record batches.

File formats go through DuckDB's readers (they stream, decompress .gz/.zst and infer types); text
folders, `save_to_disk` datasets and hub ids go through Python/`datasets`. Every reader yields
batches with the source's own columns, in the source's own order. DuckDB's errors become one line
that names the user's file (core/reader_errors.py).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import glob
import io
import os
import re
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from core.compression import COMPRESSION, check_zstd, open_raw, strip_compression
from core.errors import InputError, first_line
from core.reader_errors import (
    InvalidUtf8,
    check_parquet_columns,
    not_an_object_error,
    readable_error,
)

BATCH_ROWS = 8192
# How long a hub id may wait for the hub to answer before ingest says it cannot be reached.
HUB_TIMEOUT_S = 3.0
_JSON = (".jsonl", ".json", ".ndjson")
_CSV = (".csv", ".tsv")
_TRUE = {"1", "ON", "YES", "TRUE"}
_JSON_KINDS = {"OBJECT": "a JSON object", "ARRAY": "a JSON array", "BOOLEAN": "true/false"}


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
    """An opened source: its kind, a batch iterator factory and what decoding had to repair.

    `batches(text_column)` reads the rows; DuckDB readers also have `describe()`, the column names
    before any row is read, so the text column can be chosen first and read strictly as text.
    """

    kind: str
    location: str
    batches: Callable[..., Iterator[pa.RecordBatch]]
    counter: ReplacementCounter = field(default_factory=ReplacementCounter)
    cleanup: list[Path] = field(default_factory=list)
    describe: Callable[[], list[str]] | None = None

    def close(self) -> None:
        for p in self.cleanup:
            with contextlib.suppress(OSError):
                p.unlink()


@dataclass(frozen=True)
class _ReadOptions:
    max_line_size: int | None = None
    max_object_size: int | None = None


def detect(
    source: str,
    split: str | None,
    limit: int | None,
    *,
    scratch: Path,
    max_line_size: int | None = None,
    max_object_size: int | None = None,
) -> Source:
    """Work out what SOURCE is and return a Source, or an InputError that says what to pass.

    SCRATCH is a private folder for temporaries (UTF-8 repaired copies); the caller removes it.
    MAX_LINE_SIZE / MAX_OBJECT_SIZE raise DuckDB's read_csv / read_json limits (bytes).
    """
    opts = _ReadOptions(max_line_size, max_object_size)
    if any(ch in source for ch in "*?["):
        return _from_glob(source, limit, opts, scratch)
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_directory(path, split, limit, opts, scratch)
    if path.is_file():
        return _from_file(path, limit, opts, scratch)
    if not is_hub_id(source):
        raise InputError(f"no such file or directory: {source}")
    unreachable = _hub_unreachable()
    if unreachable:
        raise InputError(
            f"'{source}' is not a local file or folder, and the Hugging Face hub cannot be "
            f"reached to load it as a dataset ({unreachable}) — pass a local path"
        )
    return _from_hub(source, split, limit)


def is_hub_id(source: str) -> bool:
    """SOURCE names a Hugging Face hub dataset, not a file, folder or glob of this machine."""
    if any(ch in source for ch in "*?[") or Path(source).expanduser().exists():
        return False
    return not _looks_like_path(source) and _looks_like_hub_id(source)


def _looks_like_hub_id(source: str) -> bool:
    return (
        bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", source))
        and not source.startswith(".")
        and Path(source).suffix.lower() not in {*_JSON, *_CSV, ".parquet", ".txt", *COMPRESSION}
    )


def _looks_like_path(source: str) -> bool:
    """A missing SOURCE that is meant as a path, not a hub id ('user/name'): no hub lookup."""
    if source.startswith(("/", "./", "../", "~")) or source.count("/") > 1:
        return True
    return "/" in source and Path(source.split("/", 1)[0]).exists()


def _hub_unreachable() -> str | None:
    """Why the hub cannot be used now (offline mode, no answer within HUB_TIMEOUT_S), or None.

    `datasets` retries an unreachable hub for ~26 s; a missing local path should fail at once.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            request = urllib.request.Request(endpoint, method="HEAD")
            urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S).close()
            outcome.append(None)
        except urllib.error.HTTPError:  # the hub answered, if not with 200
            outcome.append(None)
        except Exception as exc:  # DNS, refused, TLS, timeout: all mean "cannot reach it"
            reason = str(getattr(exc, "reason", exc)).splitlines() or [type(exc).__name__]
            outcome.append(f"cannot connect to {endpoint}: {reason[0]}")

    # A thread, because name resolution does not honour the socket timeout.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S + 0.5)
    if not outcome:
        return f"no answer from {endpoint} within {HUB_TIMEOUT_S:.0f} s"
    return outcome[0]


def _from_glob(pattern: str, limit: int | None, opts: _ReadOptions, scratch: Path) -> Source:
    files = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not files:
        raise InputError(f"no files match {pattern}")
    kinds = {_file_kind(Path(f)) for f in files}
    if len(kinds) != 1:
        raise InputError(f"{pattern} matches files of several formats; match one format only")
    kind = kinds.pop()
    if kind in ("parquet", "json", "csv", "tsv"):
        return _duckdb_source(kind, pattern, files, limit, opts, scratch)
    raise InputError(f"{pattern}: a glob of {kind} files is not supported; use a directory")


def _file_kind(path: Path) -> str:
    base, _ = strip_compression(path.name)
    if base.endswith(_JSON):
        return "json"
    if base.endswith(_CSV):
        return base[-3:]
    if base.endswith(".parquet"):
        return "parquet"
    if base.endswith(".txt"):
        return "txt"
    return "unknown"


def _from_file(path: Path, limit: int | None, opts: _ReadOptions, scratch: Path) -> Source:
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
    return _duckdb_source(kind, str(path), [str(path)], limit, opts, scratch)


def _from_directory(
    path: Path, split: str | None, limit: int | None, opts: _ReadOptions, scratch: Path
) -> Source:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        return _from_saved_hf(path, split, limit)
    parquet = sorted(str(p) for p in path.rglob("*.parquet"))
    if parquet:
        return _duckdb_source("parquet", str(path), parquet, limit, opts, scratch)
    txt = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if txt:
        return _text_folder(path, txt, limit)
    raise InputError(
        f"{path}: folder holds no .parquet or .txt files and is not a save_to_disk dataset"
    )


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duckdb_list(files: list[str]) -> str:
    return "[" + ", ".join(_sql_str(f) for f in files) + "]"


def _duckdb_source(
    kind: str,
    location: str,
    files: list[str],
    limit: int | None,
    opts: _ReadOptions,
    scratch: Path,
) -> Source:
    for f in files:
        if f.lower().endswith(".zst"):
            check_zstd(Path(f))
    if kind == "parquet" and len(files) > 1:
        check_parquet_columns(files)
    src = Source(kind=kind, location=location, batches=lambda text_column=None: iter(()))
    repaired: dict[str, str] = {}  # repaired copy -> the file it repairs
    schema: list[tuple[str, str]] = []  # (column, DuckDB type) from describe()

    def reader(columns: str = "", records: str = "auto") -> str:
        lst = _duckdb_list(list(repaired) or files)
        if kind == "parquet":
            return f"read_parquet({lst})"
        if kind == "json":
            extra = f", columns={columns}" if columns else ""
            if records != "auto":
                extra += f", records={records}"
            if opts.max_object_size is not None:
                extra += f", maximum_object_size={int(opts.max_object_size)}"
            return f"read_json({lst}, format='auto', union_by_name=true{extra})"
        # A fixed delimiter: the sniffer takes commas inside TSV text for the separator. No
        # skipped lines: given a row with one field too many, the sniffer takes it for the header
        # and drops the rows above it.
        delim = "\t" if kind == "tsv" else ","
        extra = "" if opts.max_line_size is None else f", max_line_size={int(opts.max_line_size)}"
        return f"read_csv({lst}, union_by_name=true, header=true, skip=0, delim='{delim}'{extra})"

    def failed(exc: Exception) -> NoReturn:
        err = readable_error(exc, kind, location, {**{f: f for f in files}, **repaired})
        if not isinstance(err, InvalidUtf8):
            raise err from exc
        if repaired:
            raise InputError(
                f"{location}: text is not valid UTF-8 and cannot be repaired"
            ) from None
        # Repair a copy of each file (invalid bytes -> U+FFFD, counted); the caller restarts.
        for p in files:
            repaired[str(_repaired_copy(Path(p), src, scratch))] = p
        raise RetryWithRepair() from None

    def query(sql: str) -> list[tuple]:
        con = duckdb.connect()
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def describe() -> list[str]:
        try:
            rows = query(f"DESCRIBE SELECT * FROM {reader()}")
        except duckdb.Error as exc:
            failed(exc)
        names = [r[0] for r in rows]
        check_columns(names)
        schema[:] = [(r[0], r[1]) for r in rows]
        return names

    def check_columns(names: list[str]) -> None:
        """Refuse what DuckDB's names hide: lines that are not objects, names that clash."""
        if kind == "json" and names == ["json"]:
            refuse_non_objects()
        check_renamed(names)

    def refuse_non_objects() -> None:
        """read_json reads a file with any line that is not an object as one column, `json`: say
        which line. A file of objects with just that key, or of no records at all, passes."""
        try:
            query(f"DESCRIBE SELECT * FROM {reader(records='true')}")
            return
        except duckdb.Error as exc:
            if "non-record json" not in str(exc).lower():
                return
        # A column of the reader's own: only a record that is not an object can fail it.
        probe = "{'__infoprune_probe': 'VARCHAR'}"
        try:
            query(f"SELECT count(__infoprune_probe) FROM {reader(probe, records='true')}")
        except duckdb.Error as exc:
            err = not_an_object_error(exc, location, {**{f: f for f in files}, **repaired})
            if err is None:
                failed(exc)
            raise err from None

    def check_renamed(names: list[str]) -> None:
        """DuckDB renames the later of two names that differ only in case (`Text` -> `Text_1`):
        where that may have happened, refuse if the source's own names clash."""
        if not _maybe_renamed(names):
            return
        if kind == "json":
            # Read as one struct, the same names fail instead of being renamed.
            try:
                query(f"DESCRIBE SELECT * FROM {reader(records='false')}")
            except duckdb.Error as exc:
                if m := re.search(r'Duplicate name "+(.+?)"+ in struct', str(exc)):
                    first = next((n for n in names if _fold(n) == _fold(m[1])), m[1])
                    raise _case_clash(location, first, m[1]) from None
            return
        for f in files:
            check_distinct_columns(f, _column_names(kind, f))

    def select(text_column: str | None) -> tuple[str, str | None]:
        """The query, and the name of its extra column that flags non-text JSON values."""
        types = dict(schema)
        sql, flag = f"SELECT * FROM {reader()}", None
        # read_json types a column from its first 20,480 rows: an object or number further on is
        # then turned into its JSON text, and a mix of both in the sample into JSON with quotes.
        # Reading the text column as JSON and unquoting strings keeps text exact and flags others.
        if kind == "json" and types.get(text_column) in ("VARCHAR", "JSON"):
            flag = "__infoprune_kind"
            while flag in types:
                flag += "_"
            cols = ", ".join(
                f"{_sql_str(n)}: {_sql_str('JSON' if n == text_column else t)}" for n, t in schema
            )
            q = _sql_ident(text_column)
            # DuckDB hands JSON values over minified: a string, and only a string, starts with '"'.
            is_text = f"starts_with({q}::VARCHAR, '\"')"
            sql = (
                f"SELECT * REPLACE (CASE WHEN {is_text} THEN {q} ->> '$' END AS {q}), "
                f"CASE WHEN NOT {is_text} THEN json_type({q}) END AS {flag} "
                f"FROM {reader('{' + cols + '}')}"
            )
        return sql + (f" LIMIT {int(limit)}" if limit else ""), flag

    def batches(text_column: str | None = None) -> Iterator[pa.RecordBatch]:
        if text_column is not None and not schema:
            describe()
        sql, flag = select(text_column)
        seen = 0
        try:
            for batch in _read_duckdb(sql):
                if seen == 0 and not schema:  # read without describe(): a preview
                    check_columns(batch.schema.names)
                if flag is not None:
                    kinds = batch.column(flag)
                    if kinds.null_count < len(kinds):
                        i = pc.index(pc.is_valid(kinds), True).as_py()
                        word = _JSON_KINDS.get(kinds[i].as_py(), "a number")
                        raise InputError(
                            f"column '{text_column}' holds {word} at row {seen + i}, not text — "
                            "fix that row or pass --text-column with a text column",
                            ui=f"Column '{text_column}' holds {word} at row {seen + i}, not "
                            "text — fix that row or choose another text column above.",
                        )
                    batch = batch.drop_columns([flag])
                seen += batch.num_rows
                yield batch
        except (duckdb.Error, OSError) as exc:  # past the first batch, Arrow's stream says OSError
            failed(exc)

    src.batches, src.describe = batches, describe
    return src


def check_distinct_columns(location: str, columns: list[str]) -> None:
    """Refuse two column names that DuckDB, and so the store, takes for one: the later one would
    be renamed, or read as empty."""
    seen: dict[str, str] = {}
    for name in columns:
        if _fold(name) in seen:
            raise _case_clash(location, seen[_fold(name)], name)
        seen[_fold(name)] = name


def _fold(name: str) -> str:
    """NAME as DuckDB compares identifiers: ASCII letters fold, others do not ('É' != 'é')."""
    return name.encode().lower().decode()


def _maybe_renamed(names: list[str]) -> bool:
    folded = {_fold(n) for n in names}
    return any((m := re.fullmatch(r"(.+)_\d+", n)) and _fold(m[1]) in folded for n in names)


def _case_clash(location: str, first: str, second: str) -> InputError:
    which = (
        f"two columns are named '{first}'"
        if first == second
        else f"columns '{first}' and '{second}' differ only in case"
    )
    return InputError(f"{location}: {which} — DuckDB cannot keep both: rename one")


def _column_names(kind: str, path: str) -> list[str]:
    """The names in PATH's own header (Parquet footer, CSV/TSV first row), before DuckDB's."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_schema(path).names
        except (OSError, pa.ArrowException):
            return []
    try:
        with (
            open_raw(Path(path)) as raw,
            io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as text,
        ):
            return next(csv.reader(text, delimiter="\t" if kind == "tsv" else ","), [])
    except (OSError, EOFError, csv.Error):
        return []


class RetryWithRepair(Exception):
    """The source was repaired after some batches were read: start the ingest again."""


def _read_duckdb(sql: str) -> Iterator[pa.RecordBatch]:
    con = duckdb.connect()
    try:
        yield from con.sql(sql).to_arrow_reader(BATCH_ROWS)
    finally:
        con.close()


def _repaired_copy(path: Path, src: Source, scratch: Path) -> Path:
    """A decompressed copy of PATH in SCRATCH with invalid UTF-8 replaced (and counted)."""
    base, _ = strip_compression(path.name)
    fd, tmp = tempfile.mkstemp(prefix="utf8-", suffix="-" + base, dir=scratch)
    out_path = Path(tmp)
    src.cleanup.append(out_path)
    decoder = src.counter.incremental()
    try:
        with open_raw(path) as raw, os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
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
            f"cannot load '{name}' as a file, folder or hub dataset ({first_line(exc)})"
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
            raise InputError(
                f"{where} has splits {', '.join(names)} — pass --split NAME",
                ui=f"{where} has splits {', '.join(names)} — fill in “Split” with one of them.",
            )
        if split not in ds:
            raise InputError(f"{where} has no split '{split}'; splits are {', '.join(names)}")
        return ds[split]
    if split is not None:
        raise InputError(
            f"{where} is a single dataset without splits — drop --split",
            ui=f"{where} is a single dataset without splits — clear “Split”.",
        )
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
