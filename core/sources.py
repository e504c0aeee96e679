"""Readers that turn any supported source into a stream of Arrow record batches.

File formats go through DuckDB's readers (they stream, decompress .gz/.zst and infer types); text
folders, `save_to_disk` datasets and hub ids go through Python/`datasets`. Every reader yields
batches with the source's own columns, in the source's own order. DuckDB's errors become one line
that names the user's file (and line, where it can be found) and says what to do.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
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

from core.errors import InputError

BATCH_ROWS = 8192
# How long a hub id may wait for the hub to answer before ingest says it cannot be reached.
HUB_TIMEOUT_S = 3.0
_COMPRESSION = (".gz", ".zst")
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
            with _suppress():
                p.unlink()


class ReaderLimitError(InputError):
    """A record is larger than one of DuckDB's reader limits.

    Carries which limit (`setting` is the `ingest_dataset` keyword: max_line_size or
    max_object_size) and the size to raise it to, so the app can name its own field where the
    command line names an option.
    """

    OPTIONS = {"max_line_size": "--max-line-size", "max_object_size": "--max-object-size"}

    def __init__(
        self, location: str, record: str, limit_name: str, setting: str, current: int, needed: int
    ) -> None:
        self.location, self.record, self.limit_name = location, record, limit_name
        self.setting, self.current, self.needed = setting, current, needed
        super().__init__(self.message(f"pass {self.OPTIONS[setting]} {needed} (or larger)"))

    def message(self, remedy: str) -> str:
        """The one-line message with REMEDY (how to raise the limit) at its end."""
        return (
            f"{self.location}: {self.record} is larger than DuckDB's {self.limit_name} "
            f"({self.current:,} bytes) — {remedy}"
        )


@dataclass(frozen=True)
class _ReadOptions:
    max_line_size: int | None = None
    max_object_size: int | None = None


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
    if _looks_like_path(source) or not _looks_like_hub_id(source):
        raise InputError(f"no such file or directory: {source}")
    unreachable = _hub_unreachable()
    if unreachable:
        raise InputError(
            f"'{source}' is not a local file or folder, and the Hugging Face hub cannot be "
            f"reached to load it as a dataset ({unreachable}) — pass a local path"
        )
    return _from_hub(source, split, limit)


def _looks_like_hub_id(source: str) -> bool:
    return (
        bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", source))
        and not source.startswith(".")
        and Path(source).suffix.lower() not in {*_JSON, *_CSV, ".parquet", ".txt", *_COMPRESSION}
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
            _check_zstd(Path(f))
    if kind == "parquet" and len(files) > 1:
        _check_parquet_columns(files)
    src = Source(kind=kind, location=location, batches=lambda text_column=None: iter(()))
    repaired: dict[str, str] = {}  # repaired copy -> the file it repairs
    schema: list[tuple[str, str]] = []  # (column, DuckDB type) from describe()

    def reader(columns: str = "") -> str:
        lst = _duckdb_list(list(repaired) or files)
        if kind == "parquet":
            return f"read_parquet({lst})"
        if kind == "json":
            extra = f", columns={columns}" if columns else ""
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
        err = _readable(exc, kind, location, {**{f: f for f in files}, **repaired})
        if not isinstance(err, _InvalidUtf8):
            raise err from exc
        if repaired:
            raise InputError(
                f"{location}: text is not valid UTF-8 and cannot be repaired"
            ) from None
        # Repair a copy of each file (invalid bytes -> U+FFFD, counted); the caller restarts.
        for p in files:
            repaired[str(_repaired_copy(Path(p), src, scratch))] = p
        raise RetryWithRepair() from None

    def describe() -> list[str]:
        con = duckdb.connect()
        try:
            rows = con.execute(f"DESCRIBE SELECT * FROM {reader()}").fetchall()
        except duckdb.Error as exc:
            failed(exc)
        finally:
            con.close()
        schema[:] = [(r[0], r[1]) for r in rows]
        return [name for name, _ in schema]

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
                if flag is not None:
                    kinds = batch.column(flag)
                    if kinds.null_count < len(kinds):
                        i = pc.index(pc.is_valid(kinds), True).as_py()
                        word = _JSON_KINDS.get(kinds[i].as_py(), "a number")
                        raise InputError(
                            f"column '{text_column}' holds {word} at row {seen + i}, not text — "
                            "fix that row or pass --text-column with a text column"
                        )
                    batch = batch.drop_columns([flag])
                seen += batch.num_rows
                yield batch
        except (duckdb.Error, OSError) as exc:  # past the first batch, Arrow's stream says OSError
            failed(exc)

    src.batches, src.describe = batches, describe
    return src


class _InvalidUtf8(Exception):
    pass


class RetryWithRepair(Exception):
    """The source was repaired after some batches were read: start the ingest again."""


def _read_duckdb(sql: str) -> Iterator[pa.RecordBatch]:
    con = duckdb.connect()
    try:
        yield from con.sql(sql).to_arrow_reader(BATCH_ROWS)
    finally:
        con.close()


def _readable(exc: Exception, kind: str, location: str, shown: dict[str, str]) -> Exception:
    """DuckDB's error as one line that names the user's file and what to do.

    SHOWN maps each path DuckDB was given to the one to name (a repaired copy to its original).
    Phrases are matched with the paths taken out, so a file called `gzip.csv` is no hint.
    """
    text = str(exc)
    paths = sorted(shown, key=len, reverse=True)
    named = next((p for p in paths if p in text), None)
    where = shown[named] if named else location
    scrubbed = text
    for p in paths:
        scrubbed = scrubbed.replace(p, "<file>")
    low = scrubbed.lower()
    first = (low.splitlines() or [""])[0]
    detail = re.sub(r"^[\w ]*error: ", "", (scrubbed.splitlines() or [""])[0], flags=re.I)
    detail = detail.strip().replace("<file>", where)

    if "invalid utf-8" in low or "invalid unicode" in low:
        return _InvalidUtf8()
    if "invalid string encoding" in low:
        return InputError(
            f"{where}: a string column holds invalid UTF-8, which cannot be repaired in Parquet "
            "— rewrite the file with valid UTF-8 text"
        )
    if m := re.search(r"maximum_object_size\"? of (\d+) bytes exceeded.*?\(>\s*(\d+) bytes", text):
        current, seen = int(m[1]), int(m[2])
        # DuckDB's buffer holds twice the setting; it read SEEN bytes without finding the end.
        return ReaderLimitError(
            where,
            "a JSON record",
            "maximum_object_size",
            "max_object_size",
            current,
            _power_of_two_above(max(2 * seen, 2 * current)),
        )
    if m := re.search(r"maximum line size of (\d+) bytes exceeded\. actual size:\s*(\d+)", low):
        return ReaderLimitError(
            where,
            "a CSV row",
            "max_line_size",
            "max_line_size",
            int(m[1]),
            _power_of_two_above(int(m[2])),
        )
    if re.search(r"gzip|zstd|decompress", first):
        return InputError(
            f"{where}: truncated or corrupt compressed file ({detail}) — re-create it"
        )
    if m := re.search(
        r"malformed json in file \"<file>\", at byte \d+ in (line|record/value) (\d+): ([^\n]*)",
        low,
    ):
        why = m[3].strip().rstrip(".").strip()
        nd = m[1] == "line" or _strip_compression(where)[0].endswith((".jsonl", ".ndjson"))
        line = _bad_json_line(named, int(m[2]), nd) if named else None
        if line is None:
            return InputError(f"broken JSON in {where} ({why}) — fix the file")
        return InputError(f"broken JSON at {where} line {line} ({why}) — fix or remove that line")
    if kind == "parquet":
        if "schema mismatch" in low:
            return InputError(
                f"the Parquet files have different columns ({detail}) — ingest them separately "
                "or make the columns match"
            )
        if m := re.search(
            r'the column "([^"]+)" has type (\S+), but we are trying to read it as type ([^\s.]+)',
            scrubbed,
        ):
            return InputError(
                f"the Parquet files have different column types: '{m[1]}' is {m[2]} in {where} "
                f"but {m[3]} in the first file — ingest them separately or make the types match"
            )
        return InputError(
            f"{where}: not a readable Parquet file ({detail}) — it is corrupt or truncated"
        )
    if kind in ("csv", "tsv"):
        return _csv_error(scrubbed, kind, where, named, detail)
    if "json" in low:
        return InputError(f"{where}: not valid JSON ({detail}) — fix the file")
    return InputError(f"cannot read {where}: {detail}")


def _csv_error(scrubbed: str, kind: str, where: str, named: str | None, detail: str) -> InputError:
    """A CSV/TSV error: the line and what is wrong with it, where DuckDB (or a scan) can tell."""
    line = re.search(r"CSV Error on Line: (\d+)", scrubbed)
    cols = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", scrubbed)
    if line and cols:
        return InputError(
            f"{where} line {line[1]} has {cols[2]} columns, the header has {cols[1]} — "
            "fix that line (a stray delimiter or an unclosed quote)"
        )
    if "error when sniffing file" in scrubbed.lower():
        ragged = _ragged_csv_row(named, "\t" if kind == "tsv" else ",") if named else None
        if ragged:
            return InputError(
                f"{where} line {ragged[0]} has {ragged[2]} columns, the header has {ragged[1]} "
                "— fix that line (a stray delimiter or an unclosed quote)"
            )
        return InputError(
            f"{where}: DuckDB cannot work out the {kind.upper()}'s layout (quoting, or rows "
            "with different numbers of columns) — check it has a header row and one row per line"
        )
    if line:
        lines = scrubbed.splitlines()
        problem = next(
            (s.strip() for s in lines[1:] if s.strip() and not s.startswith("Original Line:")), ""
        )
        return InputError(
            f"cannot parse {kind.upper()} {where} line {line[1]}: {problem} — fix that line"
        )
    return InputError(f"cannot parse {kind.upper()} {where} ({detail})")


def _power_of_two_above(n: int) -> int:
    return 1 << max(int(n), 1).bit_length()


def _bad_json_line(path: str, record: int, newline_delimited: bool) -> int | None:
    """The 1-based line of the broken record DuckDB names, or None if the file is not one record
    per line. DuckDB counts non-blank lines and names the one after the broken one, so both are
    checked, with DuckDB's own parser (it allows NaN and trailing commas, Python's json does not).
    """
    candidates = {record - 1, record}
    found, n = None, 0
    con = duckdb.connect()
    try:
        with _open_raw(Path(path)) as raw:
            for lineno, line in enumerate(raw, 1):
                if not line.strip():
                    continue
                n += 1
                # An array or pretty-printed file has no line that is JSON on its own.
                if n in candidates or (not newline_delimited and n <= 3):
                    text = line.decode("utf-8", errors="replace")
                    valid = con.execute("SELECT json_valid(?)", [text]).fetchall()[0][0]
                    newline_delimited = newline_delimited or bool(valid)
                    if not valid and found is None and n in candidates:
                        found = lineno
                if n >= max(record, 3):
                    break
    except (OSError, EOFError, duckdb.Error):
        return None
    finally:
        con.close()
    return found if newline_delimited else None


def _ragged_csv_row(path: str, delim: str) -> tuple[int, int, int] | None:
    """The first row whose number of fields differs from the header's: (line, header, found)."""
    try:
        with (
            _open_raw(Path(path)) as raw,
            io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as text,
        ):
            reader = csv.reader(text, delimiter=delim)
            header = next(reader, None)
            for row in reader:
                if header is not None and row and len(row) != len(header):
                    return reader.line_num, len(header), len(row)
    except (OSError, EOFError, csv.Error):
        return None
    return None


def _check_parquet_columns(files: list[str]) -> None:
    """DuckDB reads every file with the first one's columns: a file without one of them fails as
    if corrupt, and a file with more loses them silently. Compare the footers first."""
    import pyarrow.parquet as pq

    base = os.path.commonpath(files)
    first: tuple[str, list[str]] | None = None
    for f in files:
        try:
            names = pq.read_schema(f).names
        except (OSError, pa.ArrowException):
            return  # a damaged file: DuckDB's read says what is wrong with it
        if first is None:
            first = (f, names)
        elif set(names) != set(first[1]):
            a, b = (os.path.relpath(p, base) if p != base else p for p in (first[0], f))
            raise InputError(
                f"the Parquet files have different columns: {a} has ({', '.join(first[1])}), "
                f"{b} has ({', '.join(names)}) — ingest them separately or make the columns match"
            )


def _open_raw(path: Path):
    _, comp = _strip_compression(path.name)
    if comp == ".gz":
        return gzip.open(path, "rb")
    if comp == ".zst":
        import zstandard

        # Buffered: zstandard's own reader cannot be read line by line.
        return io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        )
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


def _repaired_copy(path: Path, src: Source, scratch: Path) -> Path:
    """A decompressed copy of PATH in SCRATCH with invalid UTF-8 replaced (and counted)."""
    base, _ = _strip_compression(path.name)
    fd, tmp = tempfile.mkstemp(prefix="utf8-", suffix="-" + base, dir=scratch)
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
