"""Explore a scoring run: distributions, the least and most informative samples, token surprisal."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from core.errors import InputError
from core.explore import (
    SampleFilter,
    load_histogram,
    load_sample,
    load_samples,
    load_scatter,
    load_summary,
    meta_columns,
    probe_counts,
)
from core.scores import ENGINE, SCORES, stored_score_names
from core.scoring import get_run, run_score_columns
from core.store import Store
from ui.charts import histogram_figure
from ui.common import fmt_int, get_store, pick_run, require_access, show_error

require_access()  # first: see ui/common.py

HISTOGRAMS = stored_score_names(ENGINE)  # the model's scores, then the lengths
LABELS = {s.name: s.label for s in SCORES if s.label}
PAGE_SIZE = 20
SURPRISAL_MAX_TOKENS = 2000


@st.cache_data(show_spinner=False, max_entries=64)
def cached_histogram(db: str, run: str, score: str, log_x: bool):
    return load_histogram(Store(db), run, score, bins=60, log_x=log_x)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_summary(db: str, run: str, scores: tuple[str, ...]):
    return load_summary(Store(db), run, list(scores))


@st.cache_data(show_spinner=False, max_entries=16)
def cached_scatter(db: str, run: str, x: str, y: str):
    return load_scatter(Store(db), run, x, y)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_columns(db: str, run: str) -> list[str]:
    return run_score_columns(Store(db), run)


@st.cache_resource(show_spinner="Loading the run's model…", max_entries=2)
def cached_model(model: str):
    from core.models import load_model

    return load_model(model)


st.title("Explore")
st.caption(
    "How the information content of a run's samples is distributed, which samples carry the "
    "least and the most, and where inside a sample the model was surprised."
)
store = get_store()
db = str(store.path)
run_id = pick_run(store, key="explore_run")
if run_id is None:
    st.stop()

try:
    run = get_run(store, run_id)
    columns = cached_columns(db, run_id)
    if not columns:
        st.info("This run holds no scores yet.")
        st.stop()
    st.caption(
        f"Dataset **{run['dataset']}** · model `{run['model']}` · {fmt_int(run['n_done'])} samples"
    )

    st.subheader("Distributions")
    # The model's scores and one length by default; a model-free run shows its measures instead.
    model_scores = [c for c in HISTOGRAMS[:3] if c in columns]
    length = "n_tokens" if "n_tokens" in columns else "n_bytes"
    measures = [c for c in columns if c not in HISTOGRAMS]
    default = (model_scores or measures[:3]) + [length]
    chosen = st.multiselect(
        "Histograms of",
        [c for c in HISTOGRAMS if c in columns] + measures,
        default=default,
        key="explore_histograms",
    )
    log_x = st.toggle("Logarithmic x-axis", key="explore_log_x")
    grid = st.columns(2)
    for i, score in enumerate(chosen):
        hist = cached_histogram(db, run_id, score, log_x)
        with grid[i % 2]:
            st.plotly_chart(histogram_figure(hist, LABELS.get(score, score)), key=f"hist_{score}")
            if hist.n_left_out:
                why = "no value" + (" or a value ≤ 0 (log axis)" if log_x else "")
                st.caption(f"{fmt_int(hist.n_left_out)} samples left out: {why}.")

    summary = cached_summary(db, run_id, tuple(columns))
    st.dataframe(
        summary,
        width="stretch",
        column_config={
            "count": st.column_config.NumberColumn(format="%d"),
            **{c: st.column_config.NumberColumn(format="%.4g") for c in summary.columns[1:]},
        },
    )

    y = "bits_per_token" if "bits_per_token" in columns else columns[-1]
    x = "n_tokens" if "n_tokens" in columns else "n_bytes"
    if x in columns and y != x:
        points, n_points = cached_scatter(db, run_id, x, y)
        fig = go.Figure(
            go.Scattergl(
                x=points["x"],
                y=points["y"],
                mode="markers",
                marker=dict(size=4, opacity=0.4),
                customdata=points[["sample_id"]],
                hovertemplate=f"sample %{{customdata[0]}}<br>{x} %{{x}}<br>{y} %{{y:.4g}}"
                "<extra></extra>",
            )
        )
        fig.update_layout(
            title=f"{LABELS.get(y, y)} against {LABELS.get(x, x)}",
            height=380,
            margin=dict(l=10, r=10, t=40, b=10),
        )
        fig.update_xaxes(title=LABELS.get(x, x), type="log" if log_x else "linear")
        fig.update_yaxes(title=LABELS.get(y, y))
        st.plotly_chart(fig, key="length_scatter")
        st.caption(
            f"{fmt_int(len(points))} of {fmt_int(n_points)} samples"
            + (" (a uniform random sample)" if len(points) < n_points else "")
        )

    st.subheader("Samples ranked by information")
    probes = probe_counts(store, run_id)
    c1, c2 = st.columns([2, 1])
    rank_by = c1.selectbox(
        "Rank by", columns, index=columns.index(y) if y in columns else 0, key="explore_rank_by"
    )
    end = c2.radio("Show", ["Lowest first", "Highest first"], horizontal=True, key="explore_end")
    with st.expander("Filter", expanded=False):
        f1, f2 = st.columns([3, 1])
        text = f1.text_input("Text contains", key="explore_text")
        regex = f2.checkbox("Regular expression", key="explore_regex", help="RE2 syntax")
        meta_names = meta_columns(store, run["dataset"])
        m1, m2 = st.columns(2)
        meta_column = m1.selectbox("Metadata column", ["(none)", *meta_names], key="explore_meta")
        meta_value = m2.text_input(
            "Its value contains", key="explore_meta_value", disabled=meta_column == "(none)"
        )
        s1, s2 = st.columns(2)
        score_min = s1.number_input(f"{rank_by} at least", value=None, key="explore_min")
        score_max = s2.number_input(f"{rank_by} at most", value=None, key="explore_max")
        hide_probe = False
        if probes.get("train"):
            hide_probe = st.checkbox(
                f"Hide the {fmt_int(probes['train'])} samples that trained this model",
                key="explore_hide_probe",
            )
    if probes.get("train"):
        st.caption(
            f"This run's model is a probe trained on this dataset: {fmt_int(probes['train'])} "
            "samples trained it (column *probe* = train); their bits are lower than a new "
            "sample's would be."
        )
    filters = SampleFilter(
        text=text or None,
        regex=regex,
        meta={meta_column: meta_value} if meta_column != "(none)" and meta_value else {},
        score_min=score_min,
        score_max=score_max,
        hide_probe_training=hide_probe,
    )
    highest = end == "Highest first"
    page = st.session_state.get("explore_page", 1)
    frame, total = load_samples(
        store, run_id, rank_by, highest, filters, PAGE_SIZE, (page - 1) * PAGE_SIZE
    )
    pages = max(math.ceil(total / PAGE_SIZE), 1)
    if page > pages:  # the filters changed under a later page: show the last one
        page = st.session_state["explore_page"] = pages
        frame, total = load_samples(
            store, run_id, rank_by, highest, filters, PAGE_SIZE, (page - 1) * PAGE_SIZE
        )
    st.caption(f"{fmt_int(total)} samples match.")
    if frame.empty:
        st.stop()
    frame.insert(0, "#", range((page - 1) * PAGE_SIZE + 1, (page - 1) * PAGE_SIZE + len(frame) + 1))
    # The ranking score is the `score` column; its stored twin would only repeat it.
    frame = frame.drop(columns=[c for c in (rank_by,) if c in frame.columns])
    if not probes:
        frame = frame.drop(columns=["probe"])
    first = ["#", "sample_id", "score", "text"]
    st.dataframe(
        frame[first + [c for c in frame.columns if c not in first]],
        hide_index=True,
        width="stretch",
        column_config={
            "score": st.column_config.NumberColumn(rank_by, format="%.4f"),
            "text": st.column_config.TextColumn("text (start)", width="large"),
        },
    )
    st.number_input(f"Page (of {fmt_int(pages)})", min_value=1, max_value=pages, key="explore_page")

    st.subheader("One sample")
    sample_id = st.selectbox(
        "Sample",
        frame["sample_id"].tolist(),
        key="explore_sample",
        format_func=lambda s: f"{s} — {frame.set_index('sample_id').loc[s, 'score']:.4f}",
    )
    sample = load_sample(store, run_id, sample_id)
    cols = st.columns(min(len(sample["scores"]), 6) or 1)
    for i, (name, value) in enumerate(list(sample["scores"].items())[:6]):
        cols[i].metric(LABELS.get(name, name), f"{value:,.4g}")
    if sample["probe"]:
        st.warning(f"This sample was in the probe's **{sample['probe']}** split.")
    if sample["meta"]:
        st.caption("Metadata (the dataset's other columns)")
        st.json(sample["meta"], expanded=True)
    with st.expander(f"Full text ({fmt_int(sample['n_bytes'])} bytes)"):
        st.code(sample["text"], language=None, wrap_lines=True)

    window = run["settings"].get("window")
    if window and st.toggle(
        "Colour the tokens by surprisal (bits each token cost the model)", key="explore_surprisal"
    ):
        from core.surprisal import surprisal_html, token_surprisal, total_bits

        lm = cached_model(run["model"])
        if run["model_hash"] and lm.model_hash != run["model_hash"]:
            st.warning("The model's weights changed since this run: the colours may differ.")
        with st.spinner("Computing per-token surprisal…"):
            pieces = token_surprisal(
                run["model"],
                sample["text"],
                window,
                run["settings"]["stride"],
                loaded=lm,
                max_tokens=SURPRISAL_MAX_TOKENS,
            )
        stored = sample["scores"].get("n_tokens")
        shown_note = (
            f" (the first {fmt_int(SURPRISAL_MAX_TOKENS)} tokens)"
            if stored and stored > SURPRISAL_MAX_TOKENS
            else f"; the run stored {sample['scores']['bits_total']:,.1f}"
            if "bits_total" in sample["scores"]
            else ""
        )
        st.caption(
            "White = this sample's 5th percentile of bits or less, dark red = its 95th or more. "
            f"Hover a token for its bits. Total {total_bits(pieces):,.1f} bits{shown_note}."
        )
        st.html(surprisal_html(pieces))
    elif not window:
        st.caption("Token surprisal needs a run scored with a model.")
except InputError as exc:
    show_error(exc)
