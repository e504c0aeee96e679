"""Small UI helpers shared by the pages: the store, dataset/run pickers, formatting.

Pages import this module and core/ only; all data access goes through core functions.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import streamlit as st

from core.hosts import TOKEN_PARAM, access_settings, decide
from core.store import Store

TOKEN_OK_KEY = "access_token_ok"
# Set by app.py: this session's script runs go through its st.navigation.
NAVIGATION_KEY = "navigation_ready"
# The page a session asked for before app.py had run in it (see require_access).
WANTED_PAGE_KEY = "wanted_page"
APP_ROOT = Path(__file__).resolve().parent.parent

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
    if not st.session_state.get(NAVIGATION_KEY):
        # A page URL opened first on a fresh server runs that page without app.py: no navigation,
        # Streamlit's own list of files in the sidebar. Go through app.py, which comes back here.
        caller = Path(inspect.currentframe().f_back.f_code.co_filename).resolve()
        if caller.parent.name == "pages":
            st.session_state[WANTED_PAGE_KEY] = str(caller.relative_to(APP_ROOT))
            st.switch_page("app.py")


def wanted_page() -> str | None:
    """For app.py once its navigation exists: the page this session asked for first, if any."""
    st.session_state[NAVIGATION_KEY] = True
    return st.session_state.pop(WANTED_PAGE_KEY, None)


@functools.cache
def app_db_arg() -> str | None:
    """`streamlit run app.py -- --db PATH`: read here, since a page may run before app.py does."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.db


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
    return Store(app_db_arg() or os.environ.get("INFOPRUNE_DB") or None, lock_timeout=60)


def show_error(exc: Exception) -> None:
    """An error in the app's words where they differ from the CLI's (see InputError.ui)."""
    st.error(getattr(exc, "ui_message", None) or str(exc))


def follow_default(key: str, default: str) -> str | None:
    """Keep the text field KEY on DEFAULT, as DEFAULT changes, until the user types in it.

    Call before the field is drawn (with `key=KEY` and no value). Returns None while the field
    follows; once typed, the default it held when the user typed (compare with DEFAULT to warn
    that the settings changed since). Any default it held counts as not typed: a browser whose
    rerun request left before the last default reached it sends an earlier one back.
    """
    state = st.session_state
    held = state.setdefault(f"{key}__defaults", [])
    if key not in state or state[key] in held:
        state[key] = default
        if default in held:
            held.remove(default)
        held.append(default)
        del held[:-100]
        return None
    return held[-1] if held else None


def page_link(page: str, label: str, icon: str | None = None) -> None:
    """st.page_link to PAGE; where this script runs outside the app's navigation (a page file on
    its own), the same words pointing at the sidebar instead of an error."""
    from streamlit.errors import StreamlitPageNotFoundError

    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitPageNotFoundError:
        st.caption(f"{label}: open it from the sidebar.")


def reset_to_default(key: str) -> None:
    """A button's on_click: the field KEY follows its default again (see follow_default)."""
    st.session_state.pop(key, None)


def pick_dataset(store: Store, key: str = "dataset") -> str | None:
    """A dataset selectbox remembered across pages; None (with a hint) when the store is empty."""
    from core.datasets import dataset_names

    names = dataset_names(store)
    if not names:
        st.info("No datasets yet — add one under “Add a dataset” on the Data page.")
        return None
    current = st.session_state.get("current_dataset")
    if current in names:  # chosen on another page, or just ingested: the select follows
        st.session_state[key] = current
    elif st.session_state.get(key) not in names:
        st.session_state.pop(key, None)
    name = st.selectbox("Dataset", names, key=key, on_change=_remember_dataset, args=[key])
    st.session_state["current_dataset"] = name
    return name


def _remember_dataset(key: str) -> None:
    st.session_state["current_dataset"] = st.session_state[key]


def pick_run(store: Store, dataset: str | None = None, key: str = "run", done_only: bool = True):
    """A run selectbox (finished runs by default), remembered across pages; None if none."""
    from core.scoring import list_runs

    runs = list_runs(store, dataset)
    if done_only:
        runs = runs[runs["status"] == "done"]
    current_data = runs["dataset_current"].astype(bool)
    stale, runs = runs[~current_data], runs[current_data]
    if len(stale):
        names = ", ".join(f"'{n}'" for n in sorted(set(stale["dataset"])))
        count = "1 run" if len(stale) == 1 else f"{len(stale)} runs"
        st.caption(
            f"{count} not listed: scored on {names}, deleted or replaced since — score it again "
            "on the Score page."
        )
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


GROUP_BY_KEY = "group_by"  # the chosen GroupBy as text (or None), shared by every page
NO_GROUP = "none"


def pick_group_by(store: Store, dataset: str, key: str, container=st):
    """A "Group by" select over DATASET's metadata columns ("none" first), remembered across pages
    in st.session_state["group_by"]; the GroupBy, or None (with a caption when there is none)."""
    from core.groups import GROUP_TOP, OTHER, GroupBy, group_options

    options = {str(o): o.label for o in group_options(store, dataset)}
    if not options:
        container.caption("Group by: this dataset has no metadata column to group by.")
        return None
    texts = [NO_GROUP, *options]
    current = st.session_state.get(GROUP_BY_KEY)
    choice = container.selectbox(
        "Group by",
        texts,
        index=texts.index(current) if current in texts else 0,
        format_func=lambda t: options.get(t, t),
        key=key,
        help="A metadata column of the dataset with few distinct values, or a URL column by its "
        f"domain: the {GROUP_TOP} largest groups by name, the rest as '{OTHER}'.",
    )
    st.session_state[GROUP_BY_KEY] = None if choice == NO_GROUP else choice
    return None if choice == NO_GROUP else GroupBy.parse(choice)


NO_STRATIFY = "(whole dataset)"
DEDUP_LABELS = {
    None: "Keep duplicates",
    "exact": "Remove exact duplicates first",
    "near": "Remove near duplicates first",
}


def pick_stratify(store: Store, dataset: str, key: str, container=st) -> str | None:
    """A "Within each" select over DATASET's metadata columns: the column a stratified rule
    applies its ratio within (as a GroupBy spelling), or None for the whole dataset."""
    from core.groups import group_options

    options = {str(o): o.label for o in group_options(store, dataset)}
    texts = [NO_STRATIFY, *options]
    choice = container.selectbox(
        "Within each",
        texts,
        format_func=lambda t: options.get(t, t),
        key=key,
        disabled=not options,
        help="Apply the ratio within each value of a metadata column, so every group loses the "
        "same share and the mix of the dataset is kept (a stratified rule).",
    )
    return None if choice == NO_STRATIFY else choice


def pick_dedup(key: str, container=st) -> str | None:
    """The dedup modifier: None, 'exact' or 'near'."""
    return container.selectbox(
        "Duplicates",
        list(DEDUP_LABELS),
        format_func=DEDUP_LABELS.get,
        key=key,
        help="Keep one sample of each group of byte-identical texts (exact) or of each cluster "
        "of texts with estimated word 5-gram Jaccard ≥ 0.8 (near) — the one with the smallest "
        "sample id — and prune the other copies before the rule ranks the rest.",
    )
