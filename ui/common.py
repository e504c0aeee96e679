"""Small UI helpers shared by the pages: the store, dataset/run pickers, formatting.

Pages import this module and core/ only; all data access goes through core functions.
"""

from __future__ import annotations

import contextlib
import os
import sys
from urllib.parse import urlparse

import streamlit as st

from core.hosts import TOKEN_PARAM, access_settings, decide
from core.store import Store

TOKEN_OK_KEY = "access_token_ok"

# How every page names the pruning rules (core.rule_names.RULES).
RULE_LABELS = {
    "prune-low": "Prune the lowest (the paper's rule)",
    "prune-high": "Prune the highest",
    "keep-middle": "Keep the middle (prune both tails)",
}


def require_access() -> None:
    """Stop this script run, with one message, unless its request may use the app (core.hosts).

    app.py calls it before anything else, and so does every page: a fresh server asked first for a
    page URL (`/Data`) runs that page file directly, without app.py (Streamlit's pages/ folder).
    """
    headers = st.context.headers
    if not headers:  # no browser behind this run (AppTest): there is no request to check
        return
    settings = access_settings(sys.argv[1:], os.environ)
    decision = decide(
        settings,
        host=headers.get("Host"),
        server_address=st.get_option("server.address"),
        server_port=st.get_option("server.port"),
        given_token=st.query_params.get(TOKEN_PARAM),
        verified=st.session_state.get(TOKEN_OK_KEY, False),
    )
    if decision.token_ok:
        st.session_state[TOKEN_OK_KEY] = True
        if st.query_params.get(TOKEN_PARAM) != settings.token:  # moving to a page drops it
            st.query_params[TOKEN_PARAM] = settings.token  # so a reload is still let in
    if not decision.allowed:
        with contextlib.suppress(Exception):  # looks only: the message and the stop still follow
            hide_pages()
        st.error(decision.message, icon=":material/block:")
        st.stop()


def hide_pages() -> None:
    """A hidden navigation of empty pages, one at the address asked for (so no "page not found"):
    a refused request sees no list of the app's pages."""
    path = urlparse(st.context.url or "").path.rstrip("/").rpartition("/")[2]
    pages = [st.Page(empty_page, title="infoprune", default=True)]
    if path and path != "empty_page":
        pages.append(st.Page(empty_page, title="infoprune", url_path=path))
    st.navigation(pages, position="hidden")


def empty_page() -> None:
    """Nothing: what hide_pages' pages show."""


def get_store() -> Store:
    """The workspace store: `streamlit run app.py -- --db PATH`, $INFOPRUNE_DB, or the default."""
    return Store(os.environ.get("INFOPRUNE_DB") or None, lock_timeout=60)


def show_error(exc: Exception) -> None:
    """An error in the app's words where they differ from the CLI's (see InputError.ui)."""
    st.error(getattr(exc, "ui_message", None) or str(exc))


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
