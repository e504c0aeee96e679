"""The Explore and Prune & Export pages, driven through Streamlit's AppTest."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from core.store import Store
from tests.conftest import ROOT
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


def open_page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / name), default_timeout=60).run()
    assert not at.exception, at.exception[0].message
    return at


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
    at.text_input(key="export_out_parquet").set_value(str(out))
    at.checkbox(key="export_with_scores").check().run()
    at.button(key="export_button").click().run()
    assert not at.exception and not at.error
    table = pq.read_table(out)
    assert table.column_names[:4] == ["sample_id", "id", "text", "topic"]
    assert table.column("sample_id").to_pylist() == [f"s{i:02d}" for i in range(6, N)]
    assert "exported 14 kept samples" in at.success[0].value
    assert out.with_name("kept.parquet.manifest.json").exists()


def test_explore_ranks_filters_and_shows_one_sample(page_store):
    at = open_page("3_Explore.py")
    table = at.dataframe[1].value  # [0] is the summary
    assert list(table["sample_id"][:3]) == ["s00", "s01", "s02"]
    assert "20 samples match." in [c.value for c in at.caption]
    at.radio(key="explore_end").set_value("Highest first").run()
    assert at.dataframe[1].value["sample_id"][0] == "s19"
    at.text_input(key="explore_text").set_value("sample 1[0-2] ").run()
    assert "0 samples match." in [c.value for c in at.caption]
    at.checkbox(key="explore_regex").check().run()
    assert list(at.dataframe[1].value["sample_id"]) == ["s12", "s11", "s10"]
    at.text_input(key="explore_text").set_value("")
    at.checkbox(key="explore_regex").uncheck()
    at.selectbox(key="explore_meta").set_value("topic").run()
    at.text_input(key="explore_meta_value").set_value("t1")
    at.number_input(key="explore_max").set_value(10.0).run()
    assert list(at.dataframe[1].value["sample_id"]) == ["s07", "s04", "s01"]
    assert at.selectbox(key="explore_sample").value == "s07"
    assert metric(at, "bits per token") == "8"
    assert not at.exception


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
    assert "18 samples match." in [c.value for c in at.caption]
