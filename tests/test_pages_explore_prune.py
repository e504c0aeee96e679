"""The Explore and Prune & Export pages, driven through Streamlit's AppTest."""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import plotly.io
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from core.explore import ScoreRange
from core.store import Store
from tests.conftest import ROOT
from tests.helpers_pages import open_page
from tests.helpers_runs import add_done_run, ingest_rows, model_scores

N = 20
ROWS = [
    {"id": f"s{i:02d}", "text": f"sample {i} says " + "hello " * (i + 1), "topic": f"t{i % 3}"}
    for i in range(N)
]
# s00 is the least informative (1.0 bits/token) ... s19 the most; s19 has i + 1 = 20 tokens.
SCORES = {f"s{i:02d}": model_scores(float(i + 1) * (i + 1), i + 1, 10 * (i + 1)) for i in range(N)}
TOTAL_TOKENS = sum(range(1, N + 1))  # 210


@pytest.fixture
def page_store(tmp_path, monkeypatch):
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_rows(store, tmp_path, ROWS, id_column="id")
    add_done_run(store, "docs", SCORES)
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    return store


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_moving_the_slider_updates_counts_shares_and_borderline(page_store):
    at = open_page("4_Prune_and_Export.py")
    assert metric(at, "Pruned samples") == "2"  # default 10 % of 20
    at.slider(key="ratio_low").set_value(25.0).run()
    assert not at.exception
    # 25 % of 20 = 5 pruned: s00..s04 with 1+2+3+4+5 = 15 of 210 tokens.
    assert metric(at, "Pruned samples") == "5"
    assert metric(at, "Kept samples (of 20)") == "15"
    assert metric(at, "Kept share of samples") == "75.0%"
    assert metric(at, "Kept share of tokens") == f"{(TOTAL_TOKENS - 15) / TOTAL_TOKENS:.1%}"
    border = at.dataframe[0].value
    assert list(border["sample_id"]) == ["s02", "s03", "s04", "s05", "s06", "s07"]
    assert list(border["side"]) == ["pruned"] * 3 + ["kept"] * 3
    assert set(at.dataframe[1].value["sample_id"]) <= {f"s{i:02d}" for i in range(5)}


def test_a_ratio_outlives_a_rule_that_hides_its_slider(page_store):
    at = open_page("4_Prune_and_Export.py")
    at.slider(key="ratio_low").set_value(20.0).run()
    at.radio(key="prune_rule").set_value("prune-high").run()
    at.radio(key="prune_rule").set_value("keep-middle").run()
    assert not at.exception
    assert at.slider(key="ratio_low").value == 20.0 and at.slider(key="ratio_high").value == 10.0
    assert metric(at, "Pruned samples") == "6"  # 4 low + 2 high


def test_keep_middle_and_threshold_rules(page_store):
    at = open_page("4_Prune_and_Export.py")
    at.radio(key="prune_rule").set_value("keep-middle").run()
    at.slider(key="ratio_low").set_value(10.0)
    at.slider(key="ratio_high").set_value(20.0).run()
    assert metric(at, "Pruned samples") == "6"  # 2 low + 4 high
    at.radio(key="prune_by").set_value("threshold").run()
    at.number_input(key="threshold_low_bits_per_token").set_value(3.5)
    at.number_input(key="threshold_high_bits_per_token").set_value(17.5).run()
    assert not at.exception
    assert metric(at, "Pruned samples") == "6"  # 1, 2, 3 below; 18, 19, 20 above


def test_export_button_writes_the_kept_rows(page_store, tmp_path):
    at = open_page("4_Prune_and_Export.py")
    at.slider(key="ratio_low").set_value(30.0).run()
    out = tmp_path / "kept.parquet"
    at.text_input(key="export_out").set_value(str(out))
    at.checkbox(key="export_with_scores").check().run()
    at.button(key="export_button").click().run()
    assert not at.exception and not at.error
    table = pq.read_table(out)
    assert table.column_names[:4] == ["sample_id", "id", "text", "topic"]
    assert table.column("sample_id").to_pylist() == [f"s{i:02d}" for i in range(6, N)]
    assert "exported 14 kept samples" in at.success[0].value
    assert out.with_name("kept.parquet.manifest.json").exists()

    at.slider(key="ratio_low").set_value(40.0).run()  # the notice no longer says what is shown
    assert not at.success and not [b for b in at.get("download_button")]
    assert any("Last export" in c for c in captions(at))
    at.slider(key="ratio_low").set_value(30.0).run()
    assert "exported 14 kept samples" in at.success[0].value


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def matching(at: AppTest) -> str:
    return next(c for c in captions(at) if " match" in c).split(". ")[0]


def ranked(at: AppTest) -> list[str]:
    return list(at.dataframe[1].value["sample_id"])  # [0] is the summary


def figures(at: AppTest) -> dict[str, go.Figure]:
    """The page's Plotly figures (the scatter) by title."""
    shown = [plotly.io.from_json(c.proto.spec) for c in at.get("plotly_chart")]
    return {f.layout.title.text: f for f in shown}


def histograms(at: AppTest) -> dict[str, pd.DataFrame]:
    """The page's histograms (Vega-Lite charts) by title: the rows of their bars (group, left,
    right, value: a count, or a group's share)."""
    shown = {}
    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        data = pa.ipc.open_stream(chart.proto.data.data).read_pandas()
        shown[spec["title"]] = data[data["kind"] == "bar"]
    return shown


def counted(bars: pd.DataFrame) -> int:
    return int(bars["value"].sum())


def test_explore_ranks_filters_and_shows_one_sample(page_store):
    at = open_page("3_Explore.py")
    assert ranked(at)[:3] == ["s00", "s01", "s02"]
    assert matching(at) == "20 samples match"
    assert at.subheader[-1].value == "Sample s00"  # the first row, until a row is clicked
    at.radio(key="explore_end").set_value("Highest first").run()
    assert ranked(at)[0] == "s19"
    at.text_input(key="explore_text").set_value("sample 1[0-2] ").run()
    assert matching(at) == "0 samples match the filters"
    at.checkbox(key="explore_regex").check().run()
    assert ranked(at) == ["s12", "s11", "s10"]
    at.text_input(key="explore_text").set_value("")
    at.checkbox(key="explore_regex").uncheck()
    at.multiselect(key="explore_meta_columns").set_value(["topic", "id"]).run()
    at.text_input(key="explore_meta_topic").set_value("t1")
    at.text_input(key="explore_meta_id").set_value("s0")
    at.number_input(key="explore_max").set_value(10.0).run()
    assert ranked(at) == ["s07", "s04", "s01"]
    assert at.subheader[-1].value == "Sample s07"
    assert metric(at, "bits per token") == "8"
    assert metric(at, "length (tokens)") == "8"
    assert not at.exception


SCATTER = "bits per token against length (tokens)"


def open_scatter(at: AppTest) -> AppTest:
    """What a click on the scatter's section sets (the browser test clicks for real)."""
    at.session_state["explore_scatter"] = True
    return at.run()


def test_the_scatter_is_drawn_only_once_asked_for(page_store, monkeypatch):
    import core.explore

    queried = []
    load_scatter = core.explore.load_scatter
    monkeypatch.setattr(
        core.explore, "load_scatter", lambda *a, **k: queried.append(a) or load_scatter(*a, **k)
    )
    at = open_page("3_Explore.py")
    section = next(e for e in at.expander if e.label.startswith("Scatter:"))
    assert section.label == f"Scatter: {SCATTER}, one point per sample"
    # Two histograms by default, one row: the first model score and the length.
    assert set(histograms(at)) == {"bits per token", "length (tokens)"} and not figures(at)
    assert not queried and not [c for c in captions(at) if "Click a point" in c]

    open_scatter(at)
    assert not at.exception and len(queried) == 1
    assert len(figures(at)[SCATTER].data[0].customdata) == 20
    assert any(c.startswith("20 of 20 samples. Click a point") for c in captions(at))
    # Once opened (the expander's callback sets this; AppTest cannot click it), a later visit to
    # the page draws it, though a switch to another page dropped the expander's own state.
    again = AppTest.from_file(str(ROOT / "pages" / "3_Explore.py"), default_timeout=60)
    again.session_state["explore_scatter_shown"] = True
    assert SCATTER in figures(again.run())


def test_explore_filters_every_chart_and_clears(page_store):
    at = open_page("3_Explore.py")
    # What a click on the bars 3 to 6 of bits per token sets (the browser test clicks for real).
    at.session_state["explore_ranges"] = {
        "bits_per_token": ScoreRange("bits_per_token", 3.0, 6.0, closed=False)
    }
    open_scatter(at)
    assert ranked(at) == ["s02", "s03", "s04"] and matching(at) == "3 samples match the filters"
    charts = histograms(at)
    assert counted(charts["length (tokens)"]) == 3  # the other charts show the same samples
    own = charts["bits per token"]
    assert counted(own) == 20  # its own range: all, shaded, the bars outside it faded
    inside = own[own["inside"]]
    assert 0 < len(inside) < 60 and inside["right"].min() > 3 and inside["left"].max() < 6
    assert len(figures(at)[SCATTER].data[0].customdata) == 20
    assert at.dataframe[0].value.loc["n_tokens", "count"] == 3
    chips = [b.label for b in at.button]
    assert chips == ["3 ≤ bits_per_token < 6", "Clear all filters"]

    at.session_state["explore_open"] = "s03"  # what a click on its row (or its point) sets
    at.run()
    assert at.subheader[-1].value == "Sample s03" and metric(at, "bits per token") == "4"

    at.text_input(key="explore_text").set_value("sample 4 ").run()
    assert ranked(at) == ["s04"] and counted(histograms(at)["length (tokens)"]) == 1
    assert at.subheader[-1].value == "Sample s04"  # a filter change opens the first row
    next(b for b in at.button if b.label.startswith("text")).click().run()
    assert ranked(at) == ["s02", "s03", "s04"]
    at.button(key="explore_clear").click().run()
    assert not at.exception and matching(at) == "20 samples match"
    assert [b.label for b in at.button] == []


def test_explore_groups_histograms_summary_and_list(page_store):
    at = open_page("3_Explore.py")
    at.selectbox(key="explore_group_by").set_value("topic").run()
    assert not at.exception and at.session_state["group_by"] == "topic"
    summary = at.dataframe[0].value
    # bits per token of s_i is i + 1; topic t_k holds i = k, k + 3, ...
    assert list(summary.index) == ["t0", "t1", "t2", "all"]
    assert list(summary["count"]) == [7, 7, 6, 20]
    assert summary.loc["t2", "mean"] == pytest.approx(sum(range(3, 21, 3)) / 6)
    bars = histograms(at)["bits per token"]
    per_group = bars.groupby("group", sort=False)["value"].sum()
    assert list(per_group.index) == ["t0", "t1", "t2"] and list(per_group) == [7, 7, 6]

    at.multiselect(key="explore_groups_topic").set_value(["t2"]).run()
    assert ranked(at) == [f"s{i:02d}" for i in range(2, 20, 3)]
    assert set(histograms(at)["bits per token"]["group"]) == {"t2"}
    assert "topic in t2" in [b.label for b in at.button]

    at.radio(key="explore_group_view").set_value("share of each group").run()
    assert not at.exception
    assert histograms(at)["bits per token"]["value"].sum() == pytest.approx(1.0)
    # The Prune page starts from the same grouping.
    prune = AppTest.from_file(str(ROOT / "pages" / "4_Prune_and_Export.py"), default_timeout=60)
    prune.session_state["group_by"] = "topic"
    prune.run()
    assert prune.selectbox(key="prune_group_by").value == "topic"


def test_explore_rejects_a_bad_regular_expression(page_store):
    at = open_page("3_Explore.py")
    at.checkbox(key="explore_regex").check()
    at.text_input(key="explore_text").set_value("(unclosed").run()
    assert "bad regular expression" in at.error[0].value


def test_samples_that_trained_the_probe_are_marked_and_can_be_hidden(page_store):
    with page_store.transaction() as con:
        con.execute(
            "INSERT INTO probe_samples SELECT 'hash-test', fingerprint, sample_id, role "
            "FROM datasets, (VALUES ('s00', 'train'), ('s01', 'train'), ('s02', 'val')) "
            "v(sample_id, role)"
        )
    at = open_page("3_Explore.py")
    table = at.dataframe[1].value
    assert list(table["probe"][:3]) == ["train", "train", "val"] and table["probe"].isna()[3]
    at.checkbox(key="explore_hide_probe").check().run()
    assert list(at.dataframe[1].value["sample_id"][:2]) == ["s02", "s03"]
    assert matching(at) == "18 samples match the filters"


def test_explore_starts_each_run_from_its_own_scores(page_store):
    """A model-free run ranks by word entropy (not the last column, a duplicate count), and a
    choice made on one run does not follow to another whose scores differ."""
    from core.scoring import ScoreOptions, score_dataset

    model_run = page_store.query("SELECT run_id FROM runs")[0][0]
    free_run = score_dataset(page_store, "docs", ScoreOptions(model="none")).run_id
    at = open_page("3_Explore.py")
    assert at.selectbox(key="explore_run").value == free_run
    assert at.selectbox(key="explore_rank_by").value == "word_entropy"
    assert at.selectbox(key="explore_range_score").value == "word_entropy"
    assert at.multiselect(key="explore_histograms").value[0] == "word_entropy"

    at.selectbox(key="explore_rank_by").set_value("near_dup_count").run()
    at.selectbox(key="explore_run").set_value(model_run).run()
    assert not at.exception
    assert at.selectbox(key="explore_rank_by").value == "bits_per_token"
    assert at.multiselect(key="explore_histograms").value[0] == "bits_per_token"


def test_a_reversed_score_range_is_refused_and_the_duplicates_box_means_one_or_more(page_store):
    from core.scoring import ScoreOptions, score_dataset

    score_dataset(page_store, "docs", ScoreOptions(model="none"))
    at = open_page("3_Explore.py")
    at.selectbox(key="explore_range_score").set_value("n_bytes").run()
    at.number_input(key="explore_max").set_value(40.0).run()
    before = dict(at.session_state["explore_ranges"])
    at.number_input(key="explore_min").set_value(100.0).run()
    assert not at.exception and "swap them" in at.error[0].value
    assert at.session_state["explore_ranges"] == before  # the range before it still applies
    at.number_input(key="explore_min").set_value(10.0).run()
    assert not at.error
    assert at.session_state["explore_ranges"]["n_bytes"] == ScoreRange("n_bytes", 10.0, 40.0)

    at.session_state["explore_ranges"] = {"near_dup_count": ScoreRange("near_dup_count", 0.0, 0.0)}
    at.run()
    box = next(c for c in at.checkbox if c.label.startswith("Only samples with a duplicate"))
    assert box.value is False  # "no duplicate at all" is not "only samples with a duplicate"
    box.check().run()
    assert at.session_state["explore_ranges"]["near_dup_count"] == ScoreRange(
        "near_dup_count", 1.0, None
    )
