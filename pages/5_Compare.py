"""Compare measures: do they rank samples alike, and would they prune the same samples?"""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from core.compare import (
    load_group_agreement,
    load_prune_overlap,
    load_run_scores,
    load_spearman,
)
from core.errors import InputError
from core.explore import load_scatter
from core.groups import load_groups
from core.rule_names import RULES
from core.rules import Rule
from core.scores import MEASURE, SCORES
from core.scoring import get_run
from ui.charts import group_colors
from ui.common import (
    RULE_LABELS,
    fmt_int,
    get_store,
    pick_group_by,
    pick_run,
    require_access,
    show_error,
)

require_access()  # first: see ui/common.py

PREFERRED = ["bits_per_token", "word_entropy", "gzip_bits_per_byte", "combined"]


def default_pair(scores: list[str]) -> tuple[int, int]:
    """Indexes of the two most telling scores to start with (the model's and a model-free one)."""
    ranked = [s for s in PREFERRED if s in scores] + [s for s in scores if s not in PREFERRED]
    return scores.index(ranked[0]), scores.index(ranked[1])


st.title("Compare measures")
st.caption(
    "Each measure ranks the samples by how much information they carry. Where two measures "
    "disagree, the pruning rule you pick decides which samples go: see how far they agree "
    "over all samples, side by side, and at the ratio you would prune."
)
with st.expander("What the measures are"):
    for m in [s for s in SCORES if s.source == MEASURE]:
        st.markdown(f"**{m.name}** ({m.unit}) — {m.description}")
    st.markdown(
        "**weighted:α** — α·z(bits_per_token) + (1−α)·z(word_entropy), z-scores over the run; "
        "usable by name (e.g. `weighted:0.7`) wherever a score is asked for."
    )

store = get_store()
run = pick_run(store, key="compare_run")
if run is None:
    st.stop()
stored = load_run_scores(store, run, alpha=None)
if len(stored) < 2:
    st.info("This run holds fewer than two scores; score the dataset again to compare measures.")
    st.stop()
scores = load_run_scores(store, run)
if len(scores) > len(stored):
    alpha = st.slider(
        "α of the weighted score α·z(bits_per_token) + (1−α)·z(word_entropy)",
        0.0,
        1.0,
        0.5,
        0.05,
        key="alpha",
    )
    scores = load_run_scores(store, run, alpha=alpha)
first, second = default_pair(scores)

try:
    dataset = get_run(store, run)["dataset"]
    by = pick_group_by(store, dataset, key="compare_group_by")
    st.subheader("Rank agreement")
    spearman = load_spearman(store, run, stored)
    fig = px.imshow(
        spearman.matrix,
        text_auto=".2f",
        zmin=-1,
        zmax=1,
        color_continuous_scale="RdBu",
        aspect="auto",
    )
    st.plotly_chart(fig, key="spearman")
    st.caption(
        f"Spearman's ρ over {fmt_int(spearman.n_rows)} samples that have every score"
        + (" (a random sample of the run)" if spearman.sampled else "")
        + ". 1: same order; 0: unrelated; −1: reversed."
    )

    st.subheader("Two measures, sample by sample")
    c1, c2 = st.columns(2)
    x = c1.selectbox("Horizontal axis", scores, index=first, key="scatter_x")
    y = c2.selectbox("Vertical axis", scores, index=second, key="scatter_y")
    points, n_points = load_scatter(store, run, x, y, by=by)
    fig = px.scatter(
        points,
        x="x",
        y="y",
        color="group" if by else None,
        color_discrete_map=group_colors(load_groups(store, dataset, by).labels) if by else None,
        hover_data=["sample_id"],
        labels={"x": x, "y": y, "group": by.label if by else ""},
        opacity=0.35,
        render_mode="webgl",
    )
    st.plotly_chart(fig, key="scatter")
    st.caption(
        f"{fmt_int(len(points))} of {fmt_int(n_points)} samples"
        + (" (a random sample)" if len(points) < n_points else "")
    )

    st.subheader("Would they prune the same samples?")
    rule = st.radio("Rule", RULES, format_func=RULE_LABELS.get, horizontal=True, key="rule")
    if rule == "keep-middle":
        low, high = st.slider(
            "Keep the samples between these quantiles", 0.0, 1.0, (0.1, 0.9), 0.01, key="band"
        )
        chosen = Rule(rule, low=low, high=round(1 - high, 2))
    else:
        ratio = st.slider("Share of samples pruned", 0.0, 1.0, 0.2, 0.01, key="ratio")
        chosen = Rule(rule, low=ratio) if rule == "prune-low" else Rule(rule, high=ratio)
    c1, c2 = st.columns(2)
    a = c1.selectbox("Measure A", scores, index=first, key="overlap_a")
    b = c2.selectbox("Measure B", scores, index=second, key="overlap_b")
    overlap = load_prune_overlap(store, run, a, b, chosen)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Jaccard overlap", "—" if overlap.jaccard is None else f"{overlap.jaccard:.1%}")
    m2.metric(f"Pruned by {a}", fmt_int(overlap.n_a))
    m3.metric(f"Pruned by {b}", fmt_int(overlap.n_b))
    m4.metric("Pruned by both", fmt_int(overlap.n_both))
    for title, frame in (
        (f"Pruned by {a}, kept by {b}", overlap.only_a),
        (f"Pruned by {b}, kept by {a}", overlap.only_b),
    ):
        st.markdown(f"**{title}**")
        if frame.empty:
            st.caption("None.")
        else:
            # a == b prunes identical sets, so the columns below never share a name.
            st.dataframe(
                frame.rename(columns={"a": a, "b": b}),
                hide_index=True,
                width="stretch",
                placeholder="—",
            )

    if by is not None:
        st.subheader(f"Per {by.label}")
        st.caption(
            f"Spearman's ρ of {a} and {b} over each group's own samples, and how far the sets "
            "they prune (of the whole run, as above) agree within each group."
        )
        agreement = load_group_agreement(store, run, a, b, chosen, by)
        st.dataframe(
            agreement.assign(jaccard=agreement["jaccard"] * 100),
            hide_index=True,
            width="stretch",
            key="compare_groups",
            placeholder="—",
            column_config={
                "group": st.column_config.TextColumn(by.label),
                "samples": st.column_config.NumberColumn(format="localized"),
                "spearman": st.column_config.NumberColumn("Spearman's ρ", format="%.3f"),
                "pruned_a": st.column_config.NumberColumn(f"pruned by {a}", format="localized"),
                "pruned_b": st.column_config.NumberColumn(f"pruned by {b}", format="localized"),
                "pruned_both": st.column_config.NumberColumn("by both", format="localized"),
                "jaccard": st.column_config.NumberColumn("Jaccard", format="%.1f%%"),
            },
        )
except InputError as exc:
    show_error(exc)
