"""The Explore page's Duplicates section: how much is duplicated, and the largest clusters side by
side with what differs highlighted."""

from __future__ import annotations

import html

import streamlit as st

from core.duplicates import duplicate_summary, largest_clusters, word_diff
from ui.common import fmt_int

SHOWN_CHARS = 1500  # of each member's text: enough to see the difference, light to diff
SHOWN_MEMBERS = 3


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def duplicates_section(store, run_id: str) -> None:
    """Exact and near duplicates of RUN: counts, bytes, and the largest clusters."""
    summary = duplicate_summary(store, run_id)
    st.caption(
        "Exact duplicates are byte-identical texts; near duplicates have an estimated Jaccard "
        "similarity ≥ 0.8 over word 5-grams (MinHash), exact copies included. “Remove "
        "duplicates first” on Prune & Export keeps the one with the smallest sample id of each."
    )
    if not summary.near_samples:
        st.info("No duplicates: every sample's text is unlike every other's.")
        return
    m = st.columns(4)
    m[0].metric(
        "Samples with an exact copy",
        fmt_int(summary.exact_samples),
        help=f"in {fmt_int(summary.n_exact_groups)} groups of identical texts",
    )
    m[1].metric(
        "Exact dedup would prune",
        fmt_int(summary.exact_redundant),
        help=f"{_mb(summary.exact_redundant_bytes)} of text, "
        f"{summary.exact_redundant_bytes / max(summary.n_bytes, 1):.1%} of the dataset's bytes",
    )
    m[2].metric(
        "Samples with a near duplicate",
        fmt_int(summary.near_samples),
        help=f"in {fmt_int(summary.n_clusters)} clusters",
    )
    m[3].metric(
        "Near dedup would prune",
        fmt_int(summary.near_redundant),
        help=f"{_mb(summary.near_redundant_bytes)} of text, "
        f"{summary.near_redundant_bytes / max(summary.n_bytes, 1):.1%} of the dataset's bytes",
    )
    kind = st.radio(
        "Largest clusters",
        ["near", "exact"],
        format_func={"near": "near duplicates", "exact": "exact duplicates"}.get,
        horizontal=True,
        key="dup_kind",
    )
    clusters = largest_clusters(store, run_id, kind, limit=5, members=SHOWN_MEMBERS)
    for cluster, members in clusters.groupby("cluster", sort=False):
        first = members.iloc[0]
        title = f"{fmt_int(first['size'])} samples, {_mb(int(first['bytes']))} — kept: "
        with st.expander(
            title + str(first["sample_id"]), expanded=cluster == clusters["cluster"].iloc[0]
        ):
            columns = st.columns(len(members))
            kept_text = first["text"][:SHOWN_CHARS]
            for column, (_, member) in zip(columns, members.iterrows(), strict=True):
                role = "kept" if member["member"] == 1 else "pruned by dedup"
                column.markdown(f"**{html.escape(str(member['sample_id']))}** · {role}")
                text = member["text"][:SHOWN_CHARS]
                column.markdown(
                    _highlighted(kept_text, text, member["member"] == 1), unsafe_allow_html=True
                )
            if first["size"] > len(members):
                st.caption(f"and {fmt_int(first['size'] - len(members))} more")


def _highlighted(kept: str, text: str, is_kept: bool) -> str:
    """TEXT as escaped HTML in a scrolling box, what differs from KEPT marked."""
    if is_kept:
        body = html.escape(text)
    else:
        body = "".join(
            f"<mark>{html.escape(piece)}</mark>" if differs else html.escape(piece)
            for piece, differs in word_diff(kept, text)
        )
    style = (
        "white-space: pre-wrap; font-family: monospace; font-size: 0.8em; max-height: 18em; "
        "overflow-y: auto; border: 1px solid #ddd; padding: 0.4em; border-radius: 4px"
    )
    return f'<div style="{style}">{body}</div>'
