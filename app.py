"""infoprune's Streamlit entry point: the home page and the navigation to each step.

Run `streamlit run app.py` (optionally `-- --db PATH`, `-- --allow-host NAME`: see core/hosts.py).
On first start with an empty store the bundled sample corpus is ingested, so there is data to look
at straight away.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
SAMPLE_CORPUS = ROOT / "sample_data" / "corpus.parquet"
SAMPLE_NAME = "sample"


def _apply_cli_args() -> None:
    parser = argparse.ArgumentParser(prog="streamlit run app.py --")
    parser.add_argument("--db", help="workspace DuckDB file")
    args, _ = parser.parse_known_args(sys.argv[1:])
    if args.db:
        os.environ["INFOPRUNE_DB"] = args.db


_apply_cli_args()

from core.datasets import list_datasets  # noqa: E402
from core.errors import InputError  # noqa: E402
from core.ingest import ingest_dataset  # noqa: E402
from core.scratch import scratch_folder, temp_name  # noqa: E402
from ui.common import fmt_int, get_store, require_access  # noqa: E402


@st.cache_resource(show_spinner=False)
def sweep_temporaries(db_path: str) -> None:
    """Once per server and store: remove what killed commands left in the store's scratch folder."""
    get_store().sweep_temporaries()


@st.cache_resource(show_spinner="First start: ingesting the bundled sample corpus…")
def ensure_sample_dataset(db_path: str) -> str | None:
    """Ingest the sample corpus once per store when the store is empty."""
    store = get_store()
    if not list_datasets(store).empty or not SAMPLE_CORPUS.exists():
        return None
    try:
        return ingest_dataset(store, str(SAMPLE_CORPUS), SAMPLE_NAME, id_column="id").line()
    except InputError as exc:  # e.g. another session ingested it a moment earlier
        return str(exc)


def home() -> None:
    store = get_store()
    st.title("infoprune")
    st.caption(
        "How much information does each sample carry? Score a dataset with a small language "
        "model (the paper's *data probe*), look at the least and most informative samples, "
        "tune a pruning ratio and export the curated subset."
    )
    datasets = list_datasets(store)
    st.subheader("Datasets in this workspace")
    st.caption(f"Store: `{store.path}`")
    if datasets.empty:
        st.info("The store is empty — ingest a dataset below.")
    else:
        st.dataframe(
            datasets[["name", "samples", "mb", "skipped", "replaced_bytes", "format", "source"]],
            hide_index=True,
            width="stretch",
            column_config={"mb": st.column_config.NumberColumn("MB of text", format="%.2f")},
        )
        st.caption(
            f"{fmt_int(datasets['samples'].sum())} samples in {len(datasets)} dataset(s). "
            "Next: **Score** a dataset, then **Explore** and **Prune & Export**."
        )
    ingest_form(store)


def ingest_form(store) -> None:
    from core.reader_errors import ReaderLimitError

    line_field, object_field = "Max CSV/TSV row size in bytes", "Max JSON record size in bytes"
    st.subheader("Add a dataset")
    with st.form("ingest"):
        name = st.text_input("Name", placeholder="my-corpus")
        source = st.text_input(
            "Path, glob or hub id",
            placeholder="/data/shard-*.parquet · corpus.jsonl.gz · ./txt_folder · user/dataset",
        )
        upload = st.file_uploader(
            "…or upload a file",
            type=["jsonl", "json", "gz", "zst", "parquet", "csv", "tsv"],
        )
        c1, c2, c3 = st.columns(3)
        text_column = c1.text_input("Text column (auto if empty)")
        id_column = c2.text_input("Id column (row position if empty)")
        split = c3.text_input("Split (datasets with splits)")
        c4, c5 = st.columns(2)
        limit = c4.number_input("Read at most N rows (0 = all)", min_value=0, step=1000)
        replace = c5.checkbox("Replace a dataset of the same name")
        c6, c7 = st.columns(2)
        max_line_size = c6.number_input(
            f"{line_field} (0 = DuckDB's 2,000,000)", min_value=0, step=1_000_000
        )
        max_object_size = c7.number_input(
            f"{object_field} (0 = DuckDB's 16,777,216)", min_value=0, step=16_777_216
        )
        submitted = st.form_submit_button("Ingest", type="primary")
    if not submitted:
        return
    tmp_path = None
    try:
        if upload is not None:
            # In the store's scratch folder, named after this process: a killed app's upload is
            # swept at the next start (core/scratch.py).
            suffix = "".join(Path(upload.name).suffixes)
            folder = scratch_folder(store.path)
            folder.mkdir(parents=True, exist_ok=True)
            tmp_path = folder / temp_name("upload" + suffix)
            tmp_path.write_bytes(upload.getbuffer())
            source = str(tmp_path)
        if not source:
            st.error("Give a path, glob or hub id, or upload a file.")
            return
        with st.spinner("Ingesting…"):
            report = ingest_dataset(
                store,
                source,
                name.strip(),
                text_column=text_column or None,
                id_column=id_column or None,
                split=split or None,
                limit=int(limit) or None,
                replace=replace,
                max_line_size=int(max_line_size) or None,
                max_object_size=int(max_object_size) or None,
            )
        st.success(report.line())
        st.session_state["current_dataset"] = report.name
    except ReaderLimitError as exc:  # name the form's field, not the command-line option
        field = line_field if exc.setting == "max_line_size" else object_field
        st.error(exc.message(f"set “{field}” to {exc.needed} or more"))
    except InputError as exc:
        st.error(str(exc))
    finally:
        if tmp_path:
            tmp_path.unlink(missing_ok=True)


st.set_page_config(page_title="infoprune", page_icon=":material/content_cut:", layout="wide")
require_access()  # before the first-start ingest and any page: see core/hosts.py
sweep_temporaries(str(get_store().path))
first_start = ensure_sample_dataset(str(get_store().path))
if first_start:
    st.toast(first_start)

PAGES = [
    ("pages/1_Data.py", "Data", ":material/description:"),
    ("pages/2_Score.py", "Score", ":material/speed:"),
    ("pages/3_Explore.py", "Explore", ":material/search:"),
    ("pages/4_Prune_and_Export.py", "Prune & Export", ":material/content_cut:"),
    ("pages/5_Compare.py", "Compare measures", ":material/compare_arrows:"),
    ("pages/6_Validate.py", "Validate", ":material/science:"),
]
nav = st.navigation(
    [st.Page(home, title="Home", icon=":material/home:", default=True)]
    + [
        st.Page(path, title=title, icon=icon)
        for path, title, icon in PAGES
        if (ROOT / path).exists()
    ]
)
nav.run()
