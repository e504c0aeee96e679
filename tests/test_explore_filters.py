"""Explore's filters and groups in DuckDB, against the same filters spelled out in pandas."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from core.explore import (
    SampleFilter,
    ScoreRange,
    count_samples,
    load_group_summary,
    load_histogram,
    load_samples,
    load_scatter,
    load_summary,
)
from core.groups import MISSING, OTHER, GroupBy
from core.store import Store
from tests.helpers_runs import add_done_run, ingest_rows
from ui.charts import HIST_CLICK, HIST_SPAN, clicked_sample, selected_bins, selected_region

N = 150
WORDS = ["alpha", "beta", "Needle", "gamma", "delta"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """N samples with a few metadata columns (25 sites: some are "other"), scores on a 0.1 grid
    (many values sit on histogram edges), integer lengths, and a few samples without a score."""
    tmp_path = tmp_path_factory.mktemp("explore")
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    rnd = random.Random(5)
    rows, scores = [], {}
    for i in range(N):
        sid = f"d{i:03d}"
        rows.append(
            {
                "id": sid,
                "text": " ".join(rnd.choice(WORDS) for _ in range(rnd.randrange(3, 12))),
                "lang": rnd.choice(["en", "de"]),
                "site": None if i % 17 == 0 else f"site{rnd.randrange(25):02d}",
            }
        )
        bpt = None if i % 23 == 0 else round(rnd.uniform(1.0, 8.0), 1)
        scores[sid] = {"bits_per_token": bpt, "n_tokens": rnd.randrange(1, 51)}
    ingest_rows(store, tmp_path, rows, id_column="id")
    run = add_done_run(store, "docs", scores)
    frame = pd.DataFrame(rows).set_index("id")
    frame["bits_per_token"] = [scores[i]["bits_per_token"] for i in frame.index]
    frame["n_tokens"] = [scores[i]["n_tokens"] for i in frame.index]
    frame["bits_per_token"] = frame["bits_per_token"].astype(float)
    return store, run, frame


def oracle_site(frame: pd.DataFrame) -> pd.Series:
    """core.groups' contract: the 20 largest sites by name, the rest "other", none "(none)"."""
    counts = frame["site"].dropna().value_counts()
    top = sorted(counts.items(), key=lambda t: (-t[1], t[0]))[:20]
    named = {s for s, _ in top}
    return frame["site"].map(lambda s: MISSING if pd.isna(s) else (s if s in named else OTHER))


def oracle(frame: pd.DataFrame, f: SampleFilter) -> pd.DataFrame:
    keep = pd.Series(True, index=frame.index)
    if f.text:
        keep &= frame["text"].str.contains(f.text, case=f.regex, regex=f.regex)
    for column, value in f.meta.items():
        keep &= frame[column].fillna("").str.lower().str.contains(value.lower(), regex=False)
    for r in f.ranges:
        v = frame[r.score]
        keep &= v.notna()
        if r.low is not None:
            keep &= v >= r.low
        if r.high is not None:
            keep &= (v <= r.high) if r.closed else (v < r.high)
    if f.groups:
        keep &= oracle_site(frame).isin(f.groups)
    return frame[keep]


@pytest.mark.parametrize(("score", "bins"), [("bits_per_token", 7), ("bits_per_token", 9)])
def test_each_bar_selects_exactly_the_samples_it_counts(corpus, score, bins):
    store, run, frame = corpus
    hist = load_histogram(store, run, score, bins=bins)
    values = frame[score].dropna()
    assert hist.n_values == len(values) and hist.n_left_out == len(frame) - len(values)
    assert hist.edges[0] == values.min() and hist.edges[-1] == values.max()
    on_edges = 0
    for i, (left, right) in enumerate(zip(hist.edges, hist.edges[1:], strict=False)):
        last = i == bins - 1
        inside = (values >= left) & ((values <= right) if last else (values < right))
        on_edges += (values == left).sum()
        assert hist.counts[i] == inside.sum()
        bar = SampleFilter(ranges=(ScoreRange(score, left, right, closed=last),))
        assert count_samples(store, run, bar) == inside.sum()
        page, total = load_samples(store, run, score, filters=bar, limit=N)
        assert total == inside.sum() and sorted(page["sample_id"]) == sorted(values[inside].index)
    assert on_edges > 0  # the grid puts values on edges: the test would miss nothing else


def test_integer_lengths_on_edges_land_in_the_bar_that_selects_them(corpus):
    store, run, frame = corpus
    hist = load_histogram(store, run, "n_tokens", bins=5)
    for i, (left, right) in enumerate(zip(hist.edges, hist.edges[1:], strict=False)):
        bar = SampleFilter(ranges=(ScoreRange("n_tokens", left, right, closed=i == 4),))
        assert count_samples(store, run, bar) == hist.counts[i]


FILTERS = [
    SampleFilter(text="needle"),
    SampleFilter(text="^(?:alpha|beta) ", regex=True),
    SampleFilter(meta={"lang": "de", "site": "site1"}),
    SampleFilter(ranges=(ScoreRange("bits_per_token", 2.0, 5.0), ScoreRange("n_tokens", 10))),
    SampleFilter(ranges=(ScoreRange("bits_per_token", None, 4.0, closed=False),), text="gamma"),
    SampleFilter(group_by=GroupBy("site"), groups=(OTHER, MISSING)),
    SampleFilter(group_by=GroupBy("site"), groups=("site03",), meta={"lang": "en"}),
]


@pytest.mark.parametrize("f", FILTERS)
def test_every_view_shows_the_samples_the_filters_keep(corpus, f):
    store, run, frame = corpus
    kept = oracle(frame, f)
    scored = kept["bits_per_token"].dropna()
    assert count_samples(store, run, f) == len(kept)

    page, total = load_samples(store, run, "bits_per_token", highest=True, filters=f, limit=N)
    assert total == len(scored)
    assert list(page["score"]) == sorted(scored, reverse=True)
    assert set(page["sample_id"]) == set(scored.index)

    hist = load_histogram(store, run, "bits_per_token", bins=10, filters=f)
    assert hist.n_values == len(scored) and hist.n_left_out == len(kept) - len(scored)
    if len(scored):
        assert hist.edges[0] == scored.min() and hist.edges[-1] == scored.max()
        full = load_histogram(store, run, "bits_per_token", 10, False, f, full_range=True)
        assert full.counts == np.histogram(scored, bins=full.edges)[0].tolist()
        assert full.edges == load_histogram(store, run, "bits_per_token", bins=10).edges
    summary = load_summary(store, run, ["bits_per_token", "n_tokens"], f)
    assert summary.loc["n_tokens", "count"] == len(kept)
    if len(scored):
        assert summary.loc["bits_per_token", "mean"] == pytest.approx(scored.mean())
        assert summary.loc["bits_per_token", "p50"] == pytest.approx(scored.median())

    points, n = load_scatter(store, run, "n_tokens", "bits_per_token", filters=f)
    assert n == len(scored) and set(points["sample_id"]) == set(scored.index)


def test_groups_split_histograms_summaries_and_the_scatter(corpus):
    store, run, frame = corpus
    by = GroupBy("site")
    groups = oracle_site(frame)
    assert (groups == OTHER).any() and (groups == MISSING).any()
    f = SampleFilter(ranges=(ScoreRange("n_tokens", None, 30),))
    kept = oracle(frame, f)
    hist = load_histogram(store, run, "bits_per_token", bins=8, filters=f, by=by)
    values = kept["bits_per_token"].dropna()
    assert [sum(c) for c in zip(*hist.by_group.values(), strict=True)] == hist.counts
    for label, counts in hist.by_group.items():
        mine = values[groups[values.index] == label]
        assert sum(counts) == len(mine)
        assert counts == np.histogram(mine, bins=hist.edges)[0].tolist()
    assert list(hist.by_group)[-2:] == [OTHER, MISSING]  # the groups' own order

    summary = load_group_summary(store, run, "bits_per_token", by, f)
    assert summary.index[-1] == "all" and summary.loc["all", "count"] == len(values)
    for label in summary.index[:-1]:
        mine = values[groups[values.index] == label]
        assert summary.loc[label, "count"] == len(mine)
        assert summary.loc[label, "mean"] == pytest.approx(mine.mean())
        assert summary.loc[label, "max"] == mine.max()

    points, _ = load_scatter(store, run, "n_tokens", "bits_per_token", filters=f, by=by)
    assert (points.set_index("sample_id")["group"] == groups[points["sample_id"]]).all()


def test_a_log_axis_leaves_out_values_at_or_below_zero(corpus):
    store, run, frame = corpus
    hist = load_histogram(store, run, "n_tokens", bins=6, log_x=True)
    assert sum(hist.counts) == hist.n_values == len(frame)
    assert hist.edges[0] == pytest.approx(frame["n_tokens"].min())
    assert hist.edges[-1] == pytest.approx(frame["n_tokens"].max())


def test_bad_input_is_named(corpus):
    store, run, _ = corpus
    with pytest.raises(InputError, match="bad regular expression"):
        load_histogram(store, run, "bits_per_token", filters=SampleFilter(text="(", regex=True))
    with pytest.raises(InputError, match="unknown metadata column 'nope'"):
        count_samples(store, run, SampleFilter(meta={"nope": "x"}))
    with pytest.raises(InputError, match="unknown metadata column 'nope'"):
        count_samples(store, run, SampleFilter(group_by=GroupBy("nope"), groups=("x",)))


def test_filters_say_what_they_hold():
    r = ScoreRange("bits_per_token", 2.5, 3.25, closed=False)
    assert r.describe() == "2.5 ≤ bits_per_token < 3.25"
    assert ScoreRange("n_tokens", None, 9).describe() == "n_tokens ≤ 9"
    f = SampleFilter(ranges=(r, ScoreRange("n_tokens", 1)))
    assert f.active and not SampleFilter().active
    assert f.without_ranges("bits_per_token").ranges == (ScoreRange("n_tokens", 1),)


def test_chart_selections_read_back_as_ranges_regions_and_samples():
    # A histogram's selections as Streamlit hands them over from Vega-Lite: a clicked bar's
    # fields (HIST_CLICK), a drag's range on x (HIST_SPAN); the edges are the bins' own.
    edges = (1.0, 2.0, 3.0, 4.0)
    bar = {HIST_CLICK: [{"left": 2.0, "right": 3.0}], HIST_SPAN: {}}
    assert selected_bins(bar, edges) == (2.0, 3.0, False)
    off = {HIST_CLICK: [{"left": 2.0000000000000004, "right": 3.0}], HIST_SPAN: {}}
    assert selected_bins(off, edges)[0] == 2.0  # snapped to the exact edge
    dragged = {HIST_CLICK: {}, HIST_SPAN: {"left": [3.9, 1.2]}}
    assert selected_bins(dragged, edges) == (1.0, 4.0, True)  # the last bar is closed
    assert selected_bins({HIST_CLICK: {}, HIST_SPAN: {"left": [2.6, 2.9]}}, edges) == (
        2.0,
        3.0,
        False,
    )  # a drag inside one bar takes it
    log_edges = (1.0, 10.0, 100.0)  # centres 3.16 and 31.6 on a log axis
    assert selected_bins({HIST_SPAN: {"left": [3.0, 40.0]}}, log_edges, log_x=True) == (
        1.0,
        100.0,
        True,
    )
    assert selected_bins({HIST_SPAN: {"left": [6.0, 40.0]}}, log_edges, log_x=True)[0] == 10.0
    assert selected_bins({HIST_CLICK: {}, HIST_SPAN: {}}, edges) is None
    assert selected_bins({HIST_CLICK: [], HIST_SPAN: {}}, edges) is None
    assert selected_bins(bar, ()) is None

    click = {"points": [{"x": 5, "y": 2.5, "customdata": ["d007"]}], "box": [], "lasso": []}
    assert clicked_sample(click) == "d007" and selected_region(click) is None
    box = {
        "points": [{"x": 5, "y": 2.5, "customdata": ["a"]}, {"x": 9, "y": 1.5}],
        "box": [{"x": [4, 10], "y": [1, 3]}],
    }
    assert selected_region(box) == ((5, 9), (1.5, 2.5)) and clicked_sample(box) is None
    assert math.isfinite(selected_region(box)[0][0])


def test_each_bar_of_a_log_histogram_selects_what_it_counts(tmp_path):
    """10**log10(v) is not always v (63047 -> 63046.99999999995): the end bars' edges are the
    values themselves, so a click on the last bar takes the largest sample."""
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    values = [134, 63047, 1000, 5000, 777, 63047]
    rows = [{"id": f"s{i}", "text": f"text {i}"} for i in range(len(values))]
    ingest_rows(store, tmp_path, rows, id_column="id")
    run = add_done_run(store, "docs", {f"s{i}": {"n_tokens": v} for i, v in enumerate(values)})
    hist = load_histogram(store, run, "n_tokens", bins=8, log_x=True)
    last = len(hist.counts) - 1
    for i, count in enumerate(hist.counts):
        bar = ScoreRange("n_tokens", hist.edges[i], hist.edges[i + 1], closed=i == last)
        assert count_samples(store, run, SampleFilter(ranges=(bar,))) == count, i
    assert hist.counts[0] == 1 and hist.counts[-1] == 2
