"""Small UI helpers shared by the pages: the store, dataset/run pickers, formatting.

Pages import this module and core/ only; all data access goes through core functions.
"""

from __future__ import annotations

import os

import streamlit as st

from core.store import Store


def get_store() -> Store:
    """The workspace store: `streamlit run app.py -- --db PATH`, $INFOPRUNE_DB, or the default."""
    return Store(os.environ.get("INFOPRUNE_DB") or None, lock_timeout=60)


def show_error(exc: Exception) -> None:
    st.error(str(exc))


def pick_dataset(store: Store, key: str = "dataset") -> str | None:
    """A dataset selectbox remembered across pages; None (with a hint) when the store is empty."""
    from core.datasets import dataset_names

    names = dataset_names(store)
    if not names:
        st.info("No datasets yet — add one on the Data page.")
        return None
    current = st.session_state.get("current_dataset")
    index = names.index(current) if current in names else 0
    name = st.selectbox("Dataset", names, index=index, key=key)
    st.session_state["current_dataset"] = name
    return name


def pick_run(store: Store, dataset: str | None = None, key: str = "run", done_only: bool = True):
    """A run selectbox (finished runs by default), remembered across pages; None if none."""
    from core.scoring import list_runs

    runs = list_runs(store, dataset)
    if done_only:
        runs = runs[runs["status"] == "done"]
    if runs.empty:
        st.info("No finished scoring run yet — start one on the Score page.")
        return None
    labels = {
        r.run_id: f"{r.run_id} · {r.dataset} · {os.path.basename(str(r.model).rstrip('/'))}"
        for r in runs.itertuples()
    }
    ids = list(labels)
    current = st.session_state.get("current_run")
    index = ids.index(current) if current in ids else 0
    run_id = st.selectbox("Scoring run", ids, index=index, format_func=labels.get, key=key)
    st.session_state["current_run"] = run_id
    return run_id


def fmt_int(n) -> str:
    return f"{int(n):,}"
