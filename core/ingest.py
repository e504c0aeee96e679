"""Ingest a source into the store as one named dataset, all or nothing.

Text is kept exactly as given; only invalid UTF-8 is repaired (U+FFFD, counted). Rows whose text is
null, empty or whitespace-only are skipped and counted. The source's other columns go, unchanged and
in their order, into a per-dataset table so exports can give them back.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import InputError
from core.jobs import check_dataset_free
from core.scratch import scratch_dir
from core.sources import RetryWithRepair, Source, check_distinct_columns, detect, is_hub_id
from core.store import Store, quote_ident

TEXT_CANDIDATES = (
    "text",
    "content",
    "contents",
    "document",
    "body",
    "raw_content",
    "passage",
    "article",
    "code",
    "sentence",
)
# Column names taken as the sample id by the ingest form's preview (the CLI takes --id-column only).
ID_CANDIDATES = ("id", "sample_id", "doc_id", "document_id", "uuid", "_id")
META_KEY = "__sample_id"
# Caps what DuckDB caches while writing an ingest, so peak memory does not grow with the source.
INGEST_MEMORY_LIMIT = "256MB"
_NAME = re.compile(r"\w[\w.\-]{0,127}")  # fullmatch: `$` would let a final newline through


@dataclass
class IngestReport:
    name: str
    n_samples: int
    text_column: str
    n_skipped: int
    n_replaced_bytes: int
    n_rows_read: int
    n_bytes: int
    seconds: float

    def line(self) -> str:
        return (
            f"ingested '{self.name}': {self.n_samples} samples stored from text column "
            f"'{self.text_column}', {self.n_skipped} skipped "
            f"(null/empty/whitespace), {self.n_replaced_bytes} invalid UTF-8 bytes replaced, "
            f"{self.n_bytes / 1e6:.1f} MB of text, {self.seconds:.1f} s"
        )


def check_dataset_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InputError(
            f"dataset name {name!r} is not valid — use letters, digits, '_', '-', '.' (max 128)"
        )
    return name


def choose_text_column(columns: list[str], requested: str | None) -> str:
    """The requested column, else the first well-known text column name, else an error."""
    if requested is not None:
        if requested not in columns:
            raise InputError(
                f"text column '{requested}' not found; columns are: {', '.join(columns)}"
            )
        return requested
    lowered = {c.lower(): c for c in columns}
    for cand in TEXT_CANDIDATES:
        if cand in lowered:
            return lowered[cand]
    raise InputError(
        f"no text column found; columns are: {', '.join(columns)} — pass --text-column NAME",
        ui=f"No text column found among {', '.join(columns)} — choose the text column above.",
    )


@dataclass
class SourcePreview:
    """The first rows of a source and the columns an ingest would take, before ingesting it."""

    columns: list[str]
    rows: pa.Table
    text_column: str | None  # what ingest takes as text when none is named; None: none found
    id_column: str | None  # a column named like an id (ID_CANDIDATES); None: row positions


def preview_source(
    store: Store,
    source: str,
    split: str | None = None,
    n_rows: int = 5,
    source_name: str | None = None,
    max_line_size: int | None = None,
    max_object_size: int | None = None,
) -> SourcePreview:
    """The first N_ROWS of SOURCE, read as an ingest would read them (InputError if it cannot
    be). A hub id is read only when ingested: no preview (see `core.sources.is_hub_id`)."""
    if is_hub_id(source):
        raise InputError(f"{source} is a hub dataset: it is read when ingested, not previewed")
    with _errors_naming(source, source_name), scratch_dir(store.path, "preview") as scratch:
        src = detect(
            source,
            split,
            n_rows,
            scratch=scratch,
            max_line_size=max_line_size,
            max_object_size=max_object_size,
        )
        first = None
        try:
            for _attempt in range(2):
                try:
                    with contextlib.closing(src.batches()) as batches:
                        first = next(batches, None)
                    break
                except RetryWithRepair:
                    continue
        finally:
            src.close()
    if first is None:
        raise InputError(f"{source_name or source} holds no rows — nothing to ingest")
    columns = first.schema.names
    check_distinct_columns(source_name or source, columns)
    try:
        text_column = choose_text_column(columns, None)
    except InputError:
        text_column = None
    lowered = {c.lower(): c for c in columns if c != text_column}
    id_column = next((lowered[c] for c in ID_CANDIDATES if c in lowered), None)
    rows = pa.Table.from_batches([first]).slice(0, n_rows)
    return SourcePreview(columns, rows, text_column, id_column)


def default_dataset_name(source: str) -> str:
    """A dataset name from a file, folder, glob or hub id: its last part, format suffixes off."""
    base = re.split(r"[\\/]", source.rstrip("/\\"))[-1]
    for ext in (".gz", ".zst", ".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    name = re.sub(r"[^\w.\-]+", "-", base).strip("-.")[:128]
    return name if _NAME.fullmatch(name) else "dataset"


def ingest_dataset(
    store: Store,
    source: str,
    name: str,
    text_column: str | None = None,
    id_column: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
    max_line_size: int | None = None,
    max_object_size: int | None = None,
    source_name: str | None = None,
) -> IngestReport:
    """Read SOURCE and store it as dataset NAME in one transaction (InputError on bad input).

    MAX_LINE_SIZE / MAX_OBJECT_SIZE raise DuckDB's limit on one CSV row / JSON record, in bytes
    (None: DuckDB's default); a record over the limit raises ReaderLimitError. SOURCE_NAME is what
    the dataset records and errors name as its source (an upload's file name, where SOURCE is the
    temporary copy that is deleted after the ingest).
    """
    with _errors_naming(source, source_name):
        check_dataset_name(name)
        if limit is not None and limit <= 0:
            raise InputError("--limit must be a positive number of rows")
        for value, option in (
            (max_line_size, "--max-line-size"),
            (max_object_size, "--max-object-size"),
        ):
            if value is not None and value <= 0:
                raise InputError(f"{option} must be a positive number of bytes")
        if not replace and _dataset_exists(store, name):
            raise _exists(name)
        started = time.monotonic()
        # Temporaries (the metadata spill, UTF-8 repaired copies) go in a folder named after this
        # process: what a killed ingest leaves, the next command on the store sweeps away.
        with scratch_dir(store.path, "ingest") as scratch:
            src = detect(
                source,
                split,
                limit,
                scratch=scratch,
                max_line_size=max_line_size,
                max_object_size=max_object_size,
            )
            try:
                for _attempt in range(2):
                    try:
                        return _ingest_once(
                            store,
                            src,
                            name,
                            text_column,
                            id_column,
                            replace,
                            progress,
                            started,
                            scratch / "meta.arrows",
                            source_name,
                        )
                    except RetryWithRepair:
                        continue
                raise InputError(f"{source}: could not repair its UTF-8")
            finally:
                src.close()


@contextlib.contextmanager
def _errors_naming(source: str, shown: str | None) -> Iterator[None]:
    """InputErrors raised inside name SHOWN wherever they named SOURCE (an upload's temporary
    copy, which the user never saw)."""
    try:
        yield
    except InputError as exc:
        if shown:
            exc.args = tuple(
                a.replace(source, shown) if isinstance(a, str) else a for a in exc.args
            )
            if exc.ui:
                exc.ui = exc.ui.replace(source, shown)
            if isinstance(getattr(exc, "location", None), str):  # ReaderLimitError.message()
                exc.location = exc.location.replace(source, shown)
        raise


def _exists(name: str) -> InputError:
    return InputError(
        f"dataset '{name}' already exists — pass --replace to overwrite it",
        ui=f"Dataset '{name}' already exists — tick “Replace a dataset of the same name” to "
        "overwrite it, or choose another name.",
    )


def _dataset_exists(store: Store, name: str) -> bool:
    return bool(store.query("SELECT 1 FROM datasets WHERE name = ?", [name]))


class _Fingerprint:
    """sha256 over ids and texts that does not depend on how rows were split into batches."""

    def __init__(self) -> None:
        self._parts = [hashlib.sha256() for _ in range(4)]

    def update(self, ids: pa.Array, texts: pa.Array) -> None:
        for k, col in enumerate((ids, texts)):
            arr = pa.chunked_array(col).combine_chunks().cast(pa.large_string())
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
                arr.offset : arr.offset + len(arr) + 1
            ]
            self._parts[2 * k].update(np.diff(offsets).tobytes())
            data = arr.buffers()[2]
            if data is not None:
                self._parts[2 * k + 1].update(memoryview(data)[offsets[0] : offsets[-1]])

    def hexdigest(self) -> str:
        h = hashlib.sha256()
        for part in self._parts:
            h.update(part.digest())
        return h.hexdigest()[:32]


def _open_batches(src: Source, text_column: str | None):
    """The source's columns, its text column, and its batches with the first one read.

    Where the columns are known before reading (DuckDB readers), the text column is chosen first
    so the reader can read it strictly as text.
    """
    if src.describe is None:
        batches = src.batches()
        first = next(batches, None)
        if first is None:
            raise InputError(f"{src.location} holds no rows — nothing to ingest")
        columns = first.schema.names
        return columns, choose_text_column(columns, text_column), batches, first
    columns = src.describe()
    try:
        text_col = choose_text_column(columns, text_column)
    except InputError:
        with contextlib.closing(src.batches()) as probe:
            if next(probe, None) is None:
                raise InputError(f"{src.location} holds no rows — nothing to ingest") from None
        raise
    batches = src.batches(text_col)
    first = next(batches, None)
    if first is None:
        raise InputError(f"{src.location} holds no rows — nothing to ingest")
    return columns, text_col, batches, first


def _ingest_once(
    store,
    src: Source,
    name,
    text_column,
    id_column,
    replace,
    progress,
    started,
    meta_path: Path,
    source_name: str | None,
):
    columns, text_col, batches, first = _open_batches(src, text_column)
    # DuckDB readers refuse clashing names themselves; this is for folders and `datasets`.
    check_distinct_columns(source_name or src.location, columns)
    reserved = next((c for c in columns if c.lower() == META_KEY), None)
    if reserved is not None:
        # The meta table's key: stored beside it, every export of the dataset would fail.
        raise InputError(f"column '{reserved}' is reserved by infoprune — rename it in the source")
    if id_column is not None and id_column not in columns:
        raise InputError(f"id column '{id_column}' not found; columns are: {', '.join(columns)}")
    meta_table = "meta_" + uuid.uuid4().hex[:12]
    store.path.parent.mkdir(parents=True, exist_ok=True)

    with store.transaction() as con:
        con.execute(f"SET memory_limit = '{INGEST_MEMORY_LIMIT}'")
        old = con.execute("SELECT meta_table FROM datasets WHERE name = ?", [name]).fetchall()
        if old and not replace:
            raise _exists(name)
        if old:
            check_dataset_free(con, name)
            con.execute("DELETE FROM samples WHERE dataset = ?", [name])
            con.execute("DELETE FROM datasets WHERE name = ?", [name])
            con.execute(f"DROP TABLE IF EXISTS {quote_ident(old[0][0])}")

        # One INSERT over a stream lets DuckDB write row groups to disk as they fill; many small
        # INSERTs in one transaction keep every row (and its Arrow buffers) in memory until commit.
        stream = _SampleStream(
            src, itertools.chain([first], batches), text_col, id_column, meta_path, progress
        )
        con.register("_ingest_samples", stream.reader())
        try:
            con.execute("INSERT INTO samples SELECT ?, * FROM _ingest_samples", [name])
        except duckdb.Error:
            if stream.error is not None:
                raise stream.error from None
            raise
        con.unregister("_ingest_samples")

        if stream.n_stored == 0:
            raise InputError(
                f"no samples with text: all {stream.n_read} rows have a null, empty or "
                f"whitespace-only '{text_col}'"
            )
        if id_column is not None:
            _check_unique_ids(con, name, id_column)
        with pa.OSFile(str(meta_path)) as f:
            con.register("_ingest_meta", pa.ipc.open_stream(f))
            con.execute(f"CREATE TABLE {meta_table} AS SELECT * FROM _ingest_meta")
            con.unregister("_ingest_meta")

        schema_json = json.dumps(
            [{"name": f.name, "type": str(f.type)} for f in first.schema], ensure_ascii=False
        )
        report = IngestReport(
            name=name,
            n_samples=stream.n_stored,
            text_column=text_col,
            n_skipped=stream.n_read - stream.n_stored,
            n_replaced_bytes=src.counter.replaced_bytes,
            n_rows_read=stream.n_read,
            n_bytes=stream.n_bytes,
            seconds=time.monotonic() - started,
        )
        con.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [
                name,
                source_name or src.location,
                src.kind,
                text_col,
                id_column,
                report.n_samples,
                report.n_rows_read,
                report.n_skipped,
                report.n_replaced_bytes,
                report.n_bytes,
                schema_json,
                meta_table,
                stream.fingerprint.hexdigest(),
            ],
        )
        con.execute("RESET memory_limit")  # other connections of this process share the setting
    report.seconds = time.monotonic() - started
    return report


def _check_unique_ids(con, name: str, id_column: str) -> None:
    dup = con.execute(
        "SELECT sample_id FROM samples WHERE dataset = ? GROUP BY sample_id "
        "HAVING count(*) > 1 LIMIT 3",
        [name],
    ).fetchall()
    if dup:
        shown = ", ".join(repr(d[0]) for d in dup)
        raise InputError(
            f"id column '{id_column}' is not unique (repeated: {shown}) — "
            "pick a unique --id-column or drop it to use row positions",
            ui=f"Id column '{id_column}' is not unique (repeated: {shown}) — choose a unique "
            "id column above, or row position.",
        )


SAMPLES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.large_string()),
        ("row_idx", pa.int64()),
        ("text", pa.large_string()),
        ("n_bytes", pa.int64()),
    ]
)


class _SampleStream:
    """Source batches turned into sample rows as DuckDB pulls them; the other columns are spilled
    to an Arrow stream file, since the connection is busy with the INSERT meanwhile."""

    def __init__(self, src: Source, batches, text_col, id_column, meta_path: Path, progress):
        self.src, self.batches, self.text_col, self.id_column = src, batches, text_col, id_column
        self.meta_path, self.progress = meta_path, progress
        self.fingerprint = _Fingerprint()
        self.n_read = self.n_stored = self.n_bytes = 0
        # DuckDB reports a failure inside the stream as its own error; this keeps the original.
        self.error: BaseException | None = None

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(SAMPLES_SCHEMA, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        writer = None
        try:
            for batch in self.batches:
                samples, meta = _prepare(
                    batch, self.text_col, self.id_column, self.n_read, self.src
                )
                if writer is None:
                    writer = pa.ipc.new_stream(
                        str(self.meta_path),
                        meta.schema,
                        options=pa.ipc.IpcWriteOptions(compression="lz4"),
                    )
                writer.write_table(meta)
                self.n_read += batch.num_rows
                if samples.num_rows:
                    self.fingerprint.update(samples.column("sample_id"), samples.column("text"))
                    self.n_stored += samples.num_rows
                    self.n_bytes += pc.sum(samples.column("n_bytes")).as_py()
                    yield from samples.to_batches()
                if self.progress:
                    self.progress(self.n_read)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            if writer is not None:
                writer.close()


def _text_array(col: pa.ChunkedArray | pa.Array, text_col: str, src: Source) -> pa.Array:
    typ = col.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
        return col.cast(pa.large_string())
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_binary_view(typ):
        return pa.array(
            [None if b is None else src.counter.decode(b) for b in col.to_pylist()],
            type=pa.large_string(),
        )
    if pa.types.is_null(typ):
        return pa.nulls(len(col), pa.large_string())
    raise InputError(
        f"column '{text_col}' holds {typ}, not text — pass --text-column with a text column",
        ui=f"Column '{text_col}' holds {typ}, not text — choose a text column above.",
    )


def _prepare(batch: pa.RecordBatch, text_col, id_column, offset: int, src: Source):
    n = batch.num_rows
    text = _text_array(batch.column(text_col), text_col, src)
    row_idx = pa.array(np.arange(offset, offset + n, dtype=np.int64))
    blank = pc.or_kleene(
        pc.equal(pc.utf8_length(text), 0), pc.fill_null(pc.utf8_is_space(text), False)
    )
    keep = pc.invert(pc.fill_null(blank, True))
    if id_column is not None:
        ids_col = batch.column(id_column)
        try:
            ids = ids_col.cast(pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(
                f"id column '{id_column}' holds {ids_col.type}, which cannot serve as an id"
            ) from exc
        if ids.null_count:
            bad = pc.index(pc.is_null(ids), True).as_py() + offset
            raise InputError(f"id column '{id_column}' is empty at row {bad} — ids must be set")
    else:
        ids = row_idx.cast(pa.large_string())
    samples = pa.table(
        {
            "sample_id": ids,
            "row_idx": row_idx,
            "text": text,
            "n_bytes": pc.binary_length(text).cast(pa.int64()),
        }
    ).filter(keep)
    others = [c for c in batch.schema.names if c != text_col]
    meta = pa.table(
        {META_KEY: ids, **{c: batch.column(c) for c in others}},
    ).filter(keep)
    return samples, meta
