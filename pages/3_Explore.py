"""Explore a scoring run: distributions, the least and most informative samples, token surprisal.

The charts and the ranked list show the same samples: the filters (text, metadata, score ranges,
groups) apply to all of them. A click or a drag on a histogram, or a box on the scatter, sets a
score range (a chart is not narrowed by its own range, so the rest of it stays clickable); a
click on a row or a point opens that sample. The scatter is drawn once its section is opened.
The filters live in st.session_state, set by the charts' and the table's selection callbacks.
"""

from __future__ import annotations

import hashlib
import math
from functools import partial

import streamlit as st

from core.errors import InputError
from core.explore import (
    SampleFilter,
    ScoreRange,
    load_group_summary,
    load_histogram,
    load_run_facts,
    load_sample,
    load_samples,
    load_scatter,
    load_summary,
)
from core.groups import GroupBy, load_groups
from core.scores import ENGINE, SCORES, default_score, stored_score_names
from core.scoring import get_run, run_score_columns
from core.store import Store
from ui.charts import (
    HIST_CLICK,
    HIST_SPAN,
    clicked_sample,
    group_colors,
    group_legend_html,
    scatter_figure,
    selectable_histogram_chart,
    selected_bins,
    selected_region,
)
from ui.common import fmt_int, get_store, pick_group_by, pick_run, require_access, show_error
from ui.duplicates import duplicates_section

require_access()  # first: see ui/common.py

HISTOGRAMS = stored_score_names(ENGINE)  # the model's scores, then the lengths
LABELS = {s.name: s.label for s in SCORES if s.label}
PAGE_SIZE = 20
SURPRISAL_MAX_TOKENS = 2000
RANGES = "explore_ranges"  # score -> ScoreRange, set by the charts and the range inputs
OPEN = "explore_open"  # the sample id shown under "One sample"
SCATTER_SHOWN = "explore_scatter_shown"  # the scatter's section is open
HIST_DRAWN = "explore_hist_drawn"  # score -> how many selections its histogram has had
ANY = "(any)"
RANGE_PROBLEM = "explore_range_problem"  # why the typed range was not applied
DUPLICATES_ONLY = ScoreRange("near_dup_count", 1.0, None)  # the "Only samples with a duplicate" box
# Choices among one run's scores, reset when another run is picked (its scores differ).
RUN_CHOICES = (
    "explore_histograms",
    "explore_rank_by",
    "explore_range_score",
    "explore_summary_score",
)


# Charts are cached whole and shared by every session (st.cache_resource: not copied, never
# changed once made): a page run that finds them, a new tab or a switch back to the page, builds
# no chart and queries nothing for them.
@st.cache_resource(show_spinner=False, max_entries=64)
def histogram_chart(
    db, run, score, log_x, filters: SampleFilter, by, full, selected, colors, share
):
    """SCORE's clickable histogram (a Vega-Lite spec and its data), its bin edges and how many
    samples it leaves out."""
    hist = load_histogram(Store(db), run, score, 60, log_x, filters, by, full)
    title = LABELS.get(score, score)
    data, spec = selectable_histogram_chart(hist, title, selected, colors, share)
    return data, spec, tuple(hist.edges), hist.n_left_out


@st.cache_data(show_spinner=False, max_entries=16)
def cached_summary(db, run, scores: tuple[str, ...], filters: SampleFilter):
    return load_summary(Store(db), run, list(scores), filters)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_group_summary(db, run, score, by: GroupBy, filters: SampleFilter):
    return load_group_summary(Store(db), run, score, by, filters)


@st.cache_resource(show_spinner=False, max_entries=16)
def scatter_chart(db, run, x, y, filters: SampleFilter, by, log_x, colors, region):
    """The clickable scatter of Y against X, how many points it draws and how many there are."""
    points, n_points = load_scatter(Store(db), run, x, y, filters=filters, by=by)
    fig = scatter_figure(points, LABELS.get(x, x), LABELS.get(y, y), log_x, colors, region)
    return fig, len(points), n_points


@st.cache_data(show_spinner=False, max_entries=32)
def cached_samples(db, run, score, highest, filters: SampleFilter, page: int):
    return load_samples(Store(db), run, score, highest, filters, PAGE_SIZE, (page - 1) * PAGE_SIZE)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_columns(db: str, run: str) -> list[str]:
    return run_score_columns(Store(db), run)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_sample(db: str, run: str, sample_id: str, finished_at: str) -> dict:
    """One sample in full (FINISHED_AT in the key: a run scored again is read again)."""
    return load_sample(Store(db), run, sample_id)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_group_sizes(db: str, dataset: str, by: GroupBy, run: str) -> dict[str, int]:
    """Samples per group label of BY, in the labels' order (RUN in the key: it fixes the data)."""
    groups = load_groups(Store(db), dataset, by)
    return dict(zip(groups.labels, groups.sizes.tolist(), strict=True))


@st.cache_resource(show_spinner="Loading the run's model…", max_entries=2)
def cached_model(model: str):
    from core.models import load_model

    return load_model(model)


# ---- the filters' state, changed by callbacks (they run before the page) ------------------------


def ranges() -> dict[str, ScoreRange]:
    return st.session_state.setdefault(RANGES, {})


def set_range(new: ScoreRange | None, score: str) -> None:
    """Put (or with None drop) the range on SCORE; keep the range inputs and the page in step."""
    if new is None:
        ranges().pop(score, None)
    else:
        ranges()[score] = new
    if st.session_state.get("explore_range_score") == score:
        show_range_inputs()
    to_first_page()


def show_range_inputs() -> None:
    """The range inputs show the range of the score they are set to."""
    r = ranges().get(st.session_state.get("explore_range_score"))
    st.session_state.pop(RANGE_PROBLEM, None)
    st.session_state["explore_min"] = None if r is None else r.low
    st.session_state["explore_max"] = None if r is None else r.high


def on_range_input() -> None:
    score = st.session_state["explore_range_score"]
    low, high = st.session_state.get("explore_min"), st.session_state.get("explore_max")
    if low is not None and high is not None and low > high:  # kept off the filters, said why
        st.session_state[RANGE_PROBLEM] = (
            f"“at least” ({low:g}) is above “at most” ({high:g}) — swap them to filter {score}."
        )
        return
    st.session_state.pop(RANGE_PROBLEM, None)
    set_range(None if low is None and high is None else ScoreRange(score, low, high), score)


def histogram_key(score: str) -> str:
    """The key of SCORE's histogram: a new one after each selection it made, so that the chart
    is drawn afresh with no selection of its own (a click on the same bar again is a new
    selection, and drops the range)."""
    return f"hist_{score}_{st.session_state.get(HIST_DRAWN, {}).get(score, 0)}"


def on_histogram_select(score: str, key: str, edges: tuple[float, ...], log_x: bool) -> None:
    """A click (or a drag) on SCORE's histogram: its range becomes those bars' (again: none)."""
    picked = selected_bins(st.session_state[key]["selection"], edges, log_x)
    if picked is None:
        return
    new = ScoreRange(score, picked[0], picked[1], closed=picked[2])
    set_range(None if ranges().get(score) == new else new, score)
    drawn = st.session_state.setdefault(HIST_DRAWN, {})
    drawn[score] = drawn.get(score, 0) + 1


def on_scatter_select(x: str, y: str, key: str) -> None:
    """A box on the scatter: ranges on both scores; a click on a point: open that sample."""
    selection = st.session_state[key]["selection"]
    region = selected_region(selection)
    if region is not None:
        (x0, x1), (y0, y1) = region
        set_range(ScoreRange(x, x0, x1), x)
        set_range(ScoreRange(y, y0, y1), y)
    elif (sample := clicked_sample(selection)) is not None:
        st.session_state[OPEN] = sample


def remember_scatter() -> None:
    """The scatter's section open or closed: kept beyond the expander's own state, which a
    switch to another page drops."""
    st.session_state[SCATTER_SHOWN] = bool(st.session_state.get("explore_scatter"))


def on_row_select(key: str, ids: tuple[str, ...]) -> None:
    rows = st.session_state[key]["selection"]["rows"]
    if rows:
        st.session_state[OPEN] = ids[rows[0]]


def toggle_duplicates_only() -> None:
    """Only samples with a duplicate: a range filter on near_dup_count (shown as its chip)."""
    if ranges().get("near_dup_count") == DUPLICATES_ONLY:
        set_range(None, "near_dup_count")
    else:
        set_range(DUPLICATES_ONLY, "near_dup_count")


def to_first_page() -> None:
    """After a filter changes: the first page, and its first sample open."""
    st.session_state["explore_page"] = 1
    st.session_state.pop(OPEN, None)


def clear_meta(column: str) -> None:
    st.session_state[f"explore_meta_{column}"] = ""
    to_first_page()


def clear_key(key: str, value) -> None:
    st.session_state[key] = value
    to_first_page()


def clear_all(meta_names: list[str], groups_key: str | None) -> None:
    ranges().clear()
    show_range_inputs()
    st.session_state["explore_text"] = ""
    st.session_state["explore_hide_probe"] = False
    for column in meta_names:
        st.session_state[f"explore_meta_{column}"] = ""
    if groups_key:
        st.session_state[groups_key] = []
    to_first_page()


def chip(container, label: str, on_click, *args) -> None:
    key = "chip_" + hashlib.sha1(label.encode()).hexdigest()[:10]
    container.button(
        label, key=key, on_click=on_click, args=args, icon=":material/close:", help="Remove"
    )


@st.fragment
def one_sample(run: dict, run_id: str, ids: tuple[str, ...]) -> None:
    """The open sample (the first row's until a row or a point is clicked) in full; opening its
    text or its token surprisal reruns this part of the page only."""
    try:
        sample_id = st.session_state.get(OPEN) or ids[0]
        version = str(run["finished_at"])
        try:
            sample = cached_sample(db, run_id, sample_id, version)
        except InputError:  # opened under another run
            sample_id = st.session_state[OPEN] = ids[0]
            sample = cached_sample(db, run_id, sample_id, version)
        st.subheader(f"Sample {sample_id}")
        if sample_id not in ids:
            st.caption("Opened from the scatter or an earlier page of the list.")
        cols = st.columns(min(len(sample["scores"]), 6) or 1)
        for i, (name, value) in enumerate(list(sample["scores"].items())[:6]):
            shown = fmt_int(value) if float(value).is_integer() else f"{value:,.4g}"
            cols[i].metric(LABELS.get(name, name), shown)
        if sample["probe"]:
            st.warning(f"This sample was in the probe's **{sample['probe']}** split.")
        if sample["meta"]:
            st.caption("Metadata (the dataset's other columns)")
            st.json(sample["meta"], expanded=True)
        # Sent once opened: a long text is costly to send and to draw on every run of the page.
        label = f"Full text ({fmt_int(sample['n_bytes'])} bytes)"
        full_text = st.expander(label, key="explore_full_text", on_change="rerun")
        if full_text.open:
            full_text.code(sample["text"], language=None, wrap_lines=True)
        if not run["settings"].get("window"):
            st.caption("Token surprisal needs a run scored with a model.")
        elif st.toggle(
            "Colour the tokens by surprisal (bits each token cost the model)",
            key="explore_surprisal",
        ):
            token_colours(run, sample)
    except InputError as exc:
        show_error(exc)


def scatter_section(x: str, y: str, filters: SampleFilter, by, log_x: bool, colors) -> None:
    """The clickable scatter of Y against X: a click on a point opens that sample, a box sets
    ranges on both scores (their region shaded, the points not narrowed by them)."""
    region = None
    if x in ranges() or y in ranges():
        rx, ry = ranges().get(x), ranges().get(y)
        region = (
            (rx.low, rx.high) if rx else (None, None),
            (ry.low, ry.high) if ry else (None, None),
        )
    fig, n_drawn, n_points = scatter_chart(
        db,
        run_id,
        x,
        y,
        filters.without_ranges(x, y),
        by,
        log_x,
        colors if by else None,
        region,
    )
    st.plotly_chart(
        fig,
        key="length_scatter",
        on_select=partial(on_scatter_select, x, y, "length_scatter"),
        selection_mode=("points", "box", "lasso"),
        # WebGL at the screen's resolution, not Plotly's default of twice it: half the time to
        # draw the points where the browser draws WebGL in software.
        config={"plotGlPixelRatio": 1},
    )
    st.caption(
        f"{fmt_int(n_drawn)} of {fmt_int(n_points)} samples"
        + (" (a uniform random sample)" if n_drawn < n_points else "")
        + ". Click a point to open that sample below; the tool bar's box select keeps the "
        "samples in a box."
    )


def token_colours(run: dict, sample: dict) -> None:
    """SAMPLE's tokens coloured by the bits each cost RUN's model."""
    from core.surprisal import surprisal_html, token_surprisal, total_bits

    lm = cached_model(run["model"])
    if run["model_hash"] and lm.model_hash != run["model_hash"]:
        st.warning("The model's weights changed since this run: the colours may differ.")
    with st.spinner("Computing per-token surprisal…"):
        pieces = token_surprisal(
            run["model"],
            sample["text"],
            run["settings"]["window"],
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


# ---- the page -----------------------------------------------------------------------------------


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
    if st.session_state.get("explore_ranges_run") != run_id:  # ranges and choices are one run's
        st.session_state["explore_ranges_run"] = run_id
        ranges().clear()
        for choice in RUN_CHOICES:  # back to the new run's defaults
            st.session_state.pop(choice, None)
        show_range_inputs()
    for score in [s for s in ranges() if s not in columns]:
        ranges().pop(score)
    st.caption(
        f"Dataset **{run['dataset']}** · model `{run['model']}` · {fmt_int(run['n_done'])} samples"
    )
    facts = load_run_facts(store, run_id)
    meta_names, probes = facts.meta_columns, facts.probes
    y = default_score(columns)
    x = "n_tokens" if "n_tokens" in columns else "n_bytes"

    g1, g2, g3 = st.columns([1, 2, 1])
    by = pick_group_by(store, run["dataset"], key="explore_group_by", container=g1)
    sizes = cached_group_sizes(db, run["dataset"], by, run_id) if by else {}
    colors = group_colors(list(sizes))
    groups_key = f"explore_groups_{by}" if by else None
    shown_groups = (
        g2.multiselect(
            "Only these groups",
            list(sizes),
            format_func=lambda g: f"{g} ({fmt_int(sizes[g])})",
            key=groups_key,
            placeholder="all groups",
            on_change=to_first_page,
        )
        if by
        else []
    )
    share = by is not None and (
        g3.radio(
            "Histograms per group",
            ["stacked counts", "share of each group"],
            key="explore_group_view",
            help="Share: each group's own distribution, to compare groups of different sizes "
            "(pick a few under Only these groups).",
        )
        == "share of each group"
    )

    with st.expander("Filter by text, metadata or score", expanded=False):
        f1, f2 = st.columns([3, 1])
        text = f1.text_input("Text contains", key="explore_text", on_change=to_first_page)
        regex = f2.checkbox(
            "Regular expression", key="explore_regex", help="RE2 syntax", on_change=to_first_page
        )
        meta_chosen = st.multiselect(
            "Metadata columns to filter on", meta_names, key="explore_meta_columns"
        )
        meta = {}
        for i, column in enumerate(meta_chosen):
            if i % 3 == 0:
                cells = st.columns(3)
            meta[column] = cells[i % 3].text_input(
                f"{column} contains", key=f"explore_meta_{column}", on_change=to_first_page
            )
        s1, s2, s3 = st.columns(3)
        s1.selectbox(
            "Score range of",
            columns,
            index=columns.index(y),
            key="explore_range_score",
            on_change=show_range_inputs,
        )
        s2.number_input("at least", value=None, key="explore_min", on_change=on_range_input)
        s3.number_input("at most", value=None, key="explore_max", on_change=on_range_input)
        if RANGE_PROBLEM in st.session_state:
            st.error(st.session_state[RANGE_PROBLEM])
        if "near_dup_count" in columns:
            only_duplicates = ranges().get("near_dup_count") == DUPLICATES_ONLY
            st.checkbox(
                "Only samples with a duplicate (exact or near)",
                value=only_duplicates,
                key=f"explore_only_dups_{only_duplicates}",
                on_change=toggle_duplicates_only,
                help="Samples whose near_dup_count is at least 1: those in a duplicate cluster.",
            )
        hide_probe = False
        if probes.get("train"):
            hide_probe = st.checkbox(
                f"Hide the {fmt_int(probes['train'])} samples that trained this model",
                key="explore_hide_probe",
                on_change=to_first_page,
            )

    filters = SampleFilter(
        text=text or None,
        regex=regex,
        meta={c: v for c, v in meta.items() if v},
        ranges=tuple(ranges().values()),
        group_by=by if shown_groups else None,
        groups=tuple(shown_groups),
        hide_probe_training=hide_probe,
    )

    # Which filters are on, each with its own remove button; the count comes with the list below.
    if filters.active:
        bar = st.container(horizontal=True, vertical_alignment="center")
        bar.markdown("**Filtered:**")
        if filters.text:
            chip(
                bar,
                f"text {'matches' if regex else 'contains'} “{text}”",
                clear_key,
                "explore_text",
                "",
            )
        for column, value in filters.meta.items():
            chip(bar, f"{column} contains “{value}”", clear_meta, column)
        for score, r in ranges().items():
            chip(bar, r.describe(), set_range, None, score)
        if filters.groups:
            chip(bar, f"{by.label} in {', '.join(filters.groups)}", clear_key, groups_key, [])
        if hide_probe:
            chip(bar, "probe's training samples hidden", clear_key, "explore_hide_probe", False)
        bar.button(
            "Clear all filters",
            key="explore_clear",
            type="tertiary",
            icon=":material/filter_alt_off:",
            on_click=clear_all,
            args=(meta_names, groups_key),
        )

    st.subheader("Distributions")
    # One row by default: the model's first score (a model-free run: its first measure) and the
    # length; each chart more costs a new tab's first render (the rest are a click away).
    model_scores = [c for c in HISTOGRAMS[:3] if c in columns]
    length = "n_tokens" if "n_tokens" in columns else "n_bytes"
    measures = [c for c in columns if c not in HISTOGRAMS]
    default = (model_scores or measures)[:1] + [length]
    chosen = st.multiselect(
        "Histograms of",
        [c for c in HISTOGRAMS if c in columns] + measures,
        default=default,
        key="explore_histograms",
    )
    log_x = st.toggle("Logarithmic x-axis", key="explore_log_x")
    st.caption(
        "Click a bar to keep only the samples in its range (click it again to drop it); drag "
        "across bars to take several. The charts and the list below all show the filtered "
        "samples; a histogram is not narrowed by its own range, which it shades."
    )
    if by is not None:
        st.html(group_legend_html(by.label, colors, sizes))
    grid = st.columns(2)
    for i, score in enumerate(chosen):
        own = ranges().get(score)
        # With a range of its own, its bins stay put (the selection stays on them); the other
        # histograms zoom to the samples the filters keep.
        data, spec, edges, left_out = histogram_chart(
            db,
            run_id,
            score,
            log_x,
            filters.without_ranges(score),
            by,
            own is not None,
            None if own is None else (own.low, own.high),
            colors,
            share,
        )
        with grid[i % 2]:
            key = histogram_key(score)
            st.vega_lite_chart(
                data,
                spec,
                width="stretch",
                key=key,
                on_select=partial(on_histogram_select, score, key, edges, log_x),
                selection_mode=[HIST_CLICK, HIST_SPAN],
            )
            if left_out:
                why = "no value" + (" or a value ≤ 0 (log axis)" if log_x else "")
                st.caption(f"{fmt_int(left_out)} samples left out: {why}.")

    if x in columns and y != x:
        # Drawn once asked for (10,000 WebGL points cost a new tab most of a second); opened or
        # closed, it stays so for the session.
        scatter = st.expander(
            f"Scatter: {LABELS.get(y, y)} against {LABELS.get(x, x)}, one point per sample",
            expanded=st.session_state.get(SCATTER_SHOWN, False),
            key="explore_scatter",
            icon=":material/scatter_plot:",
            on_change=remember_scatter,
        )
        if scatter.open:
            with scatter:
                scatter_section(x, y, filters, by, log_x, colors)

    if by is None:
        summary = cached_summary(db, run_id, tuple(columns), filters)
    else:
        summary_score = st.selectbox(
            f"Summary per {by.label} of",
            columns,
            index=columns.index(y),
            key="explore_summary_score",
        )
        summary = cached_group_summary(db, run_id, summary_score, by, filters)
    st.dataframe(
        summary,
        width="stretch",
        column_config={
            "count": st.column_config.NumberColumn(format="localized"),
            **{c: st.column_config.NumberColumn(format="%.4g") for c in summary.columns[1:]},
        },
    )

    st.subheader("Samples ranked by information")
    c1, c2 = st.columns([2, 1])
    rank_by = c1.selectbox(
        "Rank by", columns, index=columns.index(y) if y in columns else 0, key="explore_rank_by"
    )
    end = c2.radio("Show", ["Lowest first", "Highest first"], horizontal=True, key="explore_end")
    if probes.get("train"):
        st.caption(
            f"This run's model is a probe trained on this dataset: {fmt_int(probes['train'])} "
            "samples trained it (column *probe* = train); their bits are lower than a new "
            "sample's would be."
        )
    highest = end == "Highest first"
    page = st.session_state.get("explore_page", 1)
    frame, total = cached_samples(db, run_id, rank_by, highest, filters, page)
    pages = max(math.ceil(total / PAGE_SIZE), 1)
    if page > pages:  # the filters changed under a later page: show the last one
        page = st.session_state["explore_page"] = pages
        frame, total = cached_samples(db, run_id, rank_by, highest, filters, page)
    st.caption(
        f"{fmt_int(total)} samples match"
        + (" the filters" if filters.active else "")
        + ". Click a row to open it below."
    )
    if frame.empty:
        st.stop()
    frame = frame.copy()
    frame.insert(0, "#", range((page - 1) * PAGE_SIZE + 1, (page - 1) * PAGE_SIZE + len(frame) + 1))
    # The ranking score is the `score` column; its stored twin would only repeat it.
    frame = frame.drop(columns=[c for c in (rank_by,) if c in frame.columns])
    if not probes:
        frame = frame.drop(columns=["probe"])
    first = ["#", "sample_id", "score", "text"]
    ids = tuple(frame["sample_id"])
    # A new key for other rows: a selection never points at a row of an earlier page.
    table_key = "explore_table_" + hashlib.sha1("\0".join(ids).encode()).hexdigest()[:12]
    st.dataframe(
        frame[first + [c for c in frame.columns if c not in first]],
        hide_index=True,
        width="stretch",
        column_config={
            "score": st.column_config.NumberColumn(rank_by, format="%.4f"),
            "text": st.column_config.TextColumn("text (start)", width="large"),
        },
        key=table_key,
        on_select=partial(on_row_select, table_key, ids),
        selection_mode="single-row",
    )
    st.number_input(f"Page (of {fmt_int(pages)})", min_value=1, max_value=pages, key="explore_page")

    one_sample(run, run_id, ids)

    if "near_dup_count" in columns:
        st.subheader("Duplicates")
        duplicates_section(store, run_id)
except InputError as exc:
    show_error(exc)
