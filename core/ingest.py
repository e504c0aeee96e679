"""Ingest a source into the store as one named dataset, all or nothing.

Text is kept exactly as given; only invalid UTF-8 is repaired (U+FFFD, counted). Rows whose text is
null, empty or whitespace-only are skipped and counted. The source's other columns go, unchanged and
in their order, into a per-dataset table so exports can give them back.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import InputError
from core.sources import RetryWithRepair, Source, detect
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
META_KEY = "__sample_id"
_NAME = re.compile(r"^[\w][\w.\-]{0,127}$")


@dataclass
class IngestReport:
    name: str
    n_samples: int
    n_skipped: int
    n_replaced_bytes: int
    n_rows_read: int
    n_bytes: int
    seconds: float

    def line(self) -> str:
        return (
            f"ingested '{self.name}': {self.n_samples} samples stored, {self.n_skipped} skipped "
            f"(null/empty/whitespace), {self.n_replaced_bytes} invalid UTF-8 bytes replaced, "
            f"{self.n_bytes / 1e6:.1f} MB of text, {self.seconds:.1f} s"
        )


def check_dataset_name(name: str) -> str:
    if not name or not _NAME.match(name):
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
        f"no text column found; columns are: {', '.join(columns)} — pass --text-column NAME"
    )


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
) -> IngestReport:
    """Read SOURCE and store it as dataset NAME in one transaction (InputError on bad input)."""
    check_dataset_name(name)
    if limit is not None and limit <= 0:
        raise InputError("--limit must be a positive number of rows")
    if not replace and _dataset_exists(store, name):
        raise InputError(f"dataset '{name}' already exists — pass --replace to overwrite it")
    started = time.monotonic()
    src = detect(source, split, limit)
    try:
        for _attempt in range(2):
            try:
                return _ingest_once(
                    store, src, name, text_column, id_column, replace, progress, started
                )
            except RetryWithRepair:
                continue
        raise InputError(f"{source}: could not repair its UTF-8")
    finally:
        src.close()


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


def _ingest_once(store, src: Source, name, text_column, id_column, replace, progress, started):
    batches = src.batches()
    first = next(batches, None)
    if first is None:
        raise InputError(f"{src.location} holds no rows — nothing to ingest")
    columns = first.schema.names
    text_col = choose_text_column(columns, text_column)
    if id_column is not None and id_column not in columns:
        raise InputError(f"id column '{id_column}' not found; columns are: {', '.join(columns)}")
    meta_table = "meta_" + uuid.uuid4().hex[:12]
    fp = _Fingerprint()
    n_read = n_stored = n_bytes = 0

    with store.transaction() as con:
        old = con.execute("SELECT meta_table FROM datasets WHERE name = ?", [name]).fetchall()
        if old and not replace:
            raise InputError(f"dataset '{name}' already exists — pass --replace to overwrite it")
        if old:
            con.execute("DELETE FROM samples WHERE dataset = ?", [name])
            con.execute("DELETE FROM datasets WHERE name = ?", [name])
            con.execute(f"DROP TABLE IF EXISTS {quote_ident(old[0][0])}")

        batch = first
        while batch is not None:
            samples, meta = _prepare(batch, name, text_col, id_column, n_read, src)
            n_read += batch.num_rows
            if samples.num_rows:
                fp.update(samples.column("sample_id"), samples.column("text"))
                n_stored += samples.num_rows
                n_bytes += pc.sum(samples.column("n_bytes")).as_py()
                con.register("_ingest_samples", samples)
                con.execute("INSERT INTO samples SELECT * FROM _ingest_samples")
                con.unregister("_ingest_samples")
            con.register("_ingest_meta", meta)
            if n_read == batch.num_rows:
                con.execute(f"CREATE TABLE {meta_table} AS SELECT * FROM _ingest_meta")
            elif meta.num_rows:
                con.execute(f"INSERT INTO {meta_table} SELECT * FROM _ingest_meta")
            con.unregister("_ingest_meta")
            if progress:
                progress(n_read)
            batch = next(batches, None)

        if n_stored == 0:
            raise InputError(
                f"no samples with text: all {n_read} rows have a null, empty or "
                f"whitespace-only '{text_col}'"
            )
        dup = con.execute(
            "SELECT sample_id FROM samples WHERE dataset = ? GROUP BY sample_id "
            "HAVING count(*) > 1 LIMIT 3",
            [name],
        ).fetchall()
        if dup:
            shown = ", ".join(repr(d[0]) for d in dup)
            raise InputError(
                f"id column '{id_column}' is not unique (repeated: {shown}) — "
                "pick a unique --id-column or drop it to use row positions"
            )
        schema_json = json.dumps(
            [{"name": f.name, "type": str(f.type)} for f in first.schema], ensure_ascii=False
        )
        report = IngestReport(
            name=name,
            n_samples=n_stored,
            n_skipped=n_read - n_stored,
            n_replaced_bytes=src.counter.replaced_bytes,
            n_rows_read=n_read,
            n_bytes=n_bytes,
            seconds=time.monotonic() - started,
        )
        con.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [
                name,
                src.location,
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
                fp.hexdigest(),
            ],
        )
    report.seconds = time.monotonic() - started
    return report


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
        f"column '{text_col}' holds {typ}, not text — pass --text-column with a text column"
    )


def _prepare(batch: pa.RecordBatch, name, text_col, id_column, offset: int, src: Source):
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
            "dataset": pa.array([name] * n, pa.large_string()),
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
