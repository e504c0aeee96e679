"""The Data page's "Add a dataset": a path or an upload, a preview of its first rows and of the
columns an ingest would take, then the ingest itself."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import InputError
from core.ingest import default_dataset_name, ingest_dataset, preview_source
from core.reader_errors import ReaderLimitError
from core.scratch import scratch_folder, temp_name
from core.sources import is_hub_id
from core.store import Store
from ui.common import follow_default, show_error

ROW_POSITION = "(row position)"
LINE_FIELD, OBJECT_FIELD = "Max CSV/TSV row size in bytes", "Max JSON record size in bytes"
UPLOAD_TYPES = ["jsonl", "json", "gz", "zst", "parquet", "csv", "tsv"]
DONE_KEY = "ingest_done"  # the last ingest's one-line summary, shown once after the rerun
PREVIEW_CHARS = 200


@dataclass(frozen=True)
class _Options:
    """How the source is read: for the preview and the ingest alike."""

    split: str | None
    limit: int | None
    max_line_size: int | None
    max_object_size: int | None


def ingest_section(store: Store) -> None:
    """Source, preview, columns, name, options and the Ingest button; reruns the page on success
    so everything below (the dataset picker, Home's table) shows the new dataset."""
    gen = st.session_state.setdefault("ingest_gen", 0)  # a new set of fields after each ingest

    def key(field: str) -> str:
        return f"ingest_{field}_{gen}"

    source = st.text_input(
        "Path, glob or hub id",
        key=key("source"),
        placeholder="/data/shard-*.parquet · corpus.jsonl.gz · ./txt_folder · user/dataset",
    ).strip()
    upload = st.file_uploader("…or upload a file", type=UPLOAD_TYPES, key=key("upload"))
    with st.expander("Options: split, rows, size limits"):
        o1, o2 = st.columns(2)
        split = o1.text_input("Split (datasets with splits)", key=key("split")).strip()
        limit = o2.number_input(
            "Read at most N rows (0 = all)", min_value=0, step=1000, key=key("limit")
        )
        o3, o4 = st.columns(2)
        max_line = o3.number_input(
            f"{LINE_FIELD} (0 = DuckDB's 2,000,000)", min_value=0, step=1_000_000, key=key("line")
        )
        max_object = o4.number_input(
            f"{OBJECT_FIELD} (0 = DuckDB's 16,777,216)",
            min_value=0,
            step=16_777_216,
            key=key("object"),
        )
    opts = _Options(
        split or None, int(limit) or None, int(max_line) or None, int(max_object) or None
    )
    shown = upload.name if upload is not None else source
    if not shown:
        st.caption("Give a path, glob or hub id, or upload a file, to see its first rows.")
        return

    preview = _preview(store, source, upload, opts)
    if isinstance(preview, InputError):
        _show(preview)
        return
    if preview is None:  # a hub id: read when ingested
        st.caption(f"`{shown}` is read from the Hugging Face hub when you ingest it.")
        c1, c2 = st.columns(2)
        text_column = c1.text_input("Text column (auto if empty)", key=key("text_typed")) or None
        id_column = c2.text_input("Id column (row position if empty)", key=key("id_typed")) or None
    else:
        # Column choices start afresh, from what was detected, for each new preview.
        preview_n = st.session_state["ingest_preview_n"]
        st.caption(f"The first {preview.rows.num_rows} rows of `{shown}`:")
        st.dataframe(_shortened(preview.rows.to_pandas()), hide_index=True, width="stretch")
        columns = preview.columns
        c1, c2 = st.columns(2)
        text_column = c1.selectbox(
            "Text column",
            columns,
            index=columns.index(preview.text_column) if preview.text_column else None,
            placeholder="choose the column that holds the text",
            key=key(f"text_{preview_n}"),
            help="Detected from its name; every other column is kept for export.",
        )
        id_choice = c2.selectbox(
            "Id column",
            [ROW_POSITION, *columns],
            index=1 + columns.index(preview.id_column) if preview.id_column else 0,
            key=key(f"id_{preview_n}"),
            help="A unique id per sample, or the row's position in the source.",
        )
        id_column = None if id_choice == ROW_POSITION else id_choice

    follow_default(key("name"), default_dataset_name(shown))
    n1, n2 = st.columns(2)
    name = n1.text_input("Name", key=key("name")).strip()
    replace = n2.checkbox("Replace a dataset of the same name", key=key("replace"))
    if not st.button("Ingest", type="primary", key=key("go")):
        return
    try:
        with st.spinner(f"Ingesting {shown}…"), _local_copy(store, upload) as copy:
            report = ingest_dataset(
                store,
                copy or source,
                name,
                text_column=text_column,
                id_column=id_column,
                split=opts.split,
                limit=opts.limit,
                replace=replace,
                max_line_size=opts.max_line_size,
                max_object_size=opts.max_object_size,
                source_name=shown if copy else None,
            )
    except InputError as exc:
        _show(exc)
        return
    st.session_state[DONE_KEY] = report.line()
    st.session_state["current_dataset"] = report.name
    st.session_state["ingest_gen"] = gen + 1
    st.rerun()


def _show(exc: InputError) -> None:
    """The error in the form's words: a reader limit names the form's field, not the option."""
    if isinstance(exc, ReaderLimitError):
        field = LINE_FIELD if exc.setting == "max_line_size" else OBJECT_FIELD
        st.error(exc.message(f"set “{field}” (under Options) to {exc.needed} or more"))
    else:
        show_error(exc)


def _preview(store: Store, source: str, upload, opts: _Options):
    """The source's preview (cached per source and options in this session), None for a hub id,
    or the InputError that reading it gave."""
    if upload is not None:
        cache_key = ("upload", upload.file_id, opts)
    elif is_hub_id(source):
        return None
    else:
        path = Path(source).expanduser()
        cache_key = ("path", source, opts, path.stat().st_mtime_ns if path.exists() else None)
    cached = st.session_state.get("ingest_preview")
    if cached and cached[0] == cache_key:
        return cached[1]
    try:
        with _local_copy(store, upload) as copy:
            preview = preview_source(
                store,
                copy or source,
                opts.split,
                source_name=upload.name if copy else None,
                max_line_size=opts.max_line_size,
                max_object_size=opts.max_object_size,
            )
    except InputError as exc:
        preview = exc
    st.session_state["ingest_preview"] = (cache_key, preview)
    st.session_state["ingest_preview_n"] = st.session_state.get("ingest_preview_n", 0) + 1
    return preview


@contextlib.contextmanager
def _local_copy(store: Store, upload):
    """The upload as a file in the store's scratch folder, named after this process (a killed
    app's copy is swept at the next start: core/scratch.py), removed after; None without one."""
    if upload is None:
        yield None
        return
    folder = scratch_folder(store.path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / temp_name("upload" + "".join(Path(upload.name).suffixes))
    try:
        path.write_bytes(upload.getbuffer())
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


def _shortened(frame: pd.DataFrame) -> pd.DataFrame:
    """Long texts cut for the preview table (the ingest stores them whole)."""
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = [
                v[:PREVIEW_CHARS] + "…" if isinstance(v, str) and len(v) > PREVIEW_CHARS else v
                for v in frame[column]
            ]
    return frame
