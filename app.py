"""infoprune's Streamlit entry point: the home page and the navigation to each step.

Run `streamlit run app.py` (optionally `-- --db PATH`, `-- --allow-host NAME`: see core/hosts.py).
On first start with an empty store the bundled sample corpus is ingested, so there is data to look
at straight away.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import streamlit as st

from core.datasets import list_datasets
from core.errors import InputError
from core.ingest import ingest_dataset
from ui.common import fmt_int, get_store, require_access, wanted_page

ROOT = Path(__file__).resolve().parent
SAMPLE_CORPUS = ROOT / "sample_data" / "corpus.parquet"
SAMPLE_NAME = "sample"


@st.cache_resource(show_spinner=False)
def sweep_temporaries(db_path: str) -> None:
    """Once per server and store: remove what killed commands left in the store's scratch folder."""
    get_store().sweep_temporaries()


@st.cache_resource(show_spinner="First start: ingesting the bundled sample corpus…")
def ensure_sample_dataset(db_path: str) -> list[str]:
    """Ingest the sample corpus once per store when the store is empty. Returns what to tell the
    user, once per server: the first script run to show it takes it out of the (shared) list."""
    store = get_store()
    if not list_datasets(store).empty or not SAMPLE_CORPUS.exists():
        return []
    try:
        return [ingest_dataset(store, str(SAMPLE_CORPUS), SAMPLE_NAME, id_column="id").line()]
    except InputError as exc:  # e.g. another session ingested it a moment earlier
        return [str(exc)]


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
        st.info("The store is empty — add a dataset on the Data page.")
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
    st.page_link("pages/1_Data.py", label="Add a dataset (on the Data page)", icon=":material/add:")


st.set_page_config(page_title="infoprune", page_icon=":material/content_cut:", layout="wide")
require_access()  # before the first-start ingest and any page: see core/hosts.py
sweep_temporaries(str(get_store().path))
first_start = ensure_sample_dataset(str(get_store().path))
with contextlib.suppress(IndexError):  # another session showed it a moment ago
    st.toast(first_start.pop())

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
wanted = wanted_page()  # a page URL this session opened before app.py had run
if wanted:
    st.switch_page(wanted)
nav.run()
