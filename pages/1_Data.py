"""Data: add a dataset (with a preview first); what a dataset holds — sizes, columns, what
ingest skipped or repaired, its samples."""

from __future__ import annotations

import streamlit as st

from core.datasets import dataset_names, drop_dataset, get_dataset, sample_page
from core.errors import InputError
from ui.common import fmt_int, get_store, pick_dataset, require_access, show_error
from ui.ingest_form import DONE_KEY, ingest_section

require_access()  # first: see ui/common.py

st.title("Data")
store = get_store()
banner = st.container()  # always there: the expander below keeps its place, and stays open
if DONE_KEY in st.session_state:
    banner.success(st.session_state.pop(DONE_KEY))
with st.expander("Add a dataset", expanded=not dataset_names(store), icon=":material/add:"):
    ingest_section(store)
st.subheader("Datasets in this workspace")
name = pick_dataset(store)
if name is None:
    st.stop()

info = get_dataset(store, name)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Samples", fmt_int(info.n_samples))
c2.metric("Text", f"{info.n_bytes / 1e6:,.2f} MB")
c3.metric("Skipped (empty text)", fmt_int(info.n_skipped))
c4.metric("Invalid UTF-8 bytes replaced", fmt_int(info.n_replaced_bytes))
st.caption(
    f"Source `{info.source}` ({info.format}) · text column `{info.text_column}` · "
    f"id column `{info.id_column or 'row position'}` · fingerprint `{info.fingerprint}`"
)
with st.expander("Original columns (kept for export, in this order)"):
    st.dataframe(info.columns, hide_index=True)

st.subheader("Samples")
query = st.text_input("Contains (substring, case-insensitive)", key="data_query")
per_page = 25
total = sample_page(store, name, query, 0, 0)[1]
pages = max(1, -(-total // per_page))
page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="data_page")
df, _ = sample_page(store, name, query, per_page, (page - 1) * per_page)
st.caption(f"{fmt_int(total)} matching samples")
st.dataframe(df, hide_index=True, width="stretch")
if not df.empty:
    chosen = st.selectbox("Read one sample in full", df["sample_id"].tolist(), key="data_read")
    st.text(sample_page(store, name, None, 1, 0, sample_id=chosen)[0]["text"].iloc[0])

with st.expander("Delete this dataset"):
    st.warning(
        "Removes its samples from the store. Its scoring runs stay in the store but are no "
        "longer listed on Explore, Prune & Export, Compare and Validate (they hold scores, not "
        "texts); ingesting the same content under this name again brings them back."
    )
    if st.button(f"Delete '{name}'", type="secondary"):
        try:
            drop_dataset(store, name)
        except InputError as exc:
            show_error(exc)
        else:
            st.session_state.pop("current_dataset", None)
            st.rerun()
