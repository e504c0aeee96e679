"""Group-by on the Prune & Export page (AppTest), checked against a direct computation."""

from __future__ import annotations

import math
import random

import pytest
from streamlit.testing.v1 import AppTest

from core.store import Store
from tests.conftest import ROOT
from tests.helpers_runs import add_done_run, ingest_rows, model_scores

N = 30
SOURCES = ["web", "books", "code"]
UNSCORED = {"g04", "g11"}


def rows() -> list[dict]:
    return [
        {"id": f"g{i:02d}", "text": f"doc {i} " + "word " * (i + 1), "source": SOURCES[i % 3]}
        for i in range(N)
    ]


def scores() -> dict[str, float]:
    """Distinct scores; the code samples score lowest on the whole, so they lose the most."""
    rnd = random.Random(5)
    out = {}
    for row in rows():
        if row["id"] not in UNSCORED:
            out[row["id"]] = rnd.random() + (0.0 if row["source"] == "code" else 0.6)
    return out


def expected_table(ratio: float) -> dict[str, dict]:
    """Per source: samples, pruned, pruned share, tokens and kept tokens, in plain Python."""
    s = scores()
    ranked = sorted(s, key=s.get)
    pruned = set(ranked[: math.floor(ratio * len(ranked) + 0.5)])
    out = {}
    for source in SOURCES:
        ids = [r["id"] for r in rows() if r["source"] == source]
        tokens = {i: (int(i[1:]) + 1 if i in s else 0) for i in ids}
        lost = [i for i in ids if i in pruned]
        out[source] = {
            "samples": len(ids),
            "pruned": len(lost),
            "pruned_share": len(lost) / len(ids),
            "tokens": sum(tokens.values()),
            "kept_tokens": sum(tokens.values()) - sum(tokens[i] for i in lost),
        }
    return out


@pytest.fixture
def grouped_page(tmp_path, monkeypatch):
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_rows(store, tmp_path, rows(), id_column="id")
    add_done_run(
        store,
        "docs",
        {
            sid: model_scores(v * (int(sid[1:]) + 1), int(sid[1:]) + 1, 9)
            for sid, v in scores().items()
        },
    )
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    at = AppTest.from_file(str(ROOT / "pages" / "4_Prune_and_Export.py"), default_timeout=60)
    return at.run()


def group_frame(at: AppTest):
    return next(d.value for d in at.dataframe if "pruned_share" in d.value.columns)


def assert_matches(at: AppTest, ratio: float) -> None:
    assert not at.exception, at.exception[0].message
    table = group_frame(at)
    expected = expected_table(ratio)
    assert sorted(table["group"]) == sorted(SOURCES)
    for row in table.to_dict("records"):
        want = expected[row["group"]]
        assert row["samples"] == want["samples"] and row["pruned"] == want["pruned"]
        assert row["kept"] == want["samples"] - want["pruned"]
        assert row["pruned_share"] == pytest.approx(want["pruned_share"])
        assert (row["tokens"], row["kept_tokens"]) == (want["tokens"], want["kept_tokens"])
    shares = list(table["pruned_share"])
    assert shares == sorted(shares, reverse=True)  # the groups losing most first


def test_grouping_shows_each_groups_pruned_share_and_follows_the_slider(grouped_page):
    at = grouped_page
    assert not any("pruned_share" in d.value.columns for d in at.dataframe)  # "none" first
    at.selectbox(key="prune_group_by").set_value("source").run()
    assert at.session_state["group_by"] == "source"  # what the other pages start from
    assert "What each source loses" in [h.value for h in at.subheader]
    assert_matches(at, 0.1)
    at.slider(key="ratio_low").set_value(40.0).run()
    assert_matches(at, 0.4)
    assert group_frame(at)["group"][0] == "code"
    source_of = {r["id"]: r["source"] for r in rows()}
    border = next(d.value for d in at.dataframe if "side" in d.value.columns)
    assert list(border.columns[:-1]).index("source") == list(border.columns).index("sample_id") + 1
    assert list(border["source"]) == [source_of[i] for i in border["sample_id"]]
    at.selectbox(key="prune_group_by").set_value("none").run()
    assert at.session_state["group_by"] is None
    assert not any("pruned_share" in d.value.columns for d in at.dataframe)


def test_the_group_by_chosen_on_another_page_is_the_default(tmp_path, monkeypatch):
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_rows(store, tmp_path, rows(), id_column="id")
    add_done_run(store, "docs", {sid: model_scores(v, 1, 9) for sid, v in scores().items()})
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    at = AppTest.from_file(str(ROOT / "pages" / "4_Prune_and_Export.py"), default_timeout=60)
    at.session_state["group_by"] = "source"
    at.run()
    assert at.selectbox(key="prune_group_by").value == "source"
    assert sorted(group_frame(at)["group"]) == sorted(SOURCES)


def test_a_dataset_without_metadata_says_so(tmp_path, monkeypatch):
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_rows(store, tmp_path, [{"text": f"doc {i}"} for i in range(6)])
    add_done_run(store, "docs", {str(i): {"bits_per_token": float(i)} for i in range(6)})
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    at = AppTest.from_file(str(ROOT / "pages" / "4_Prune_and_Export.py"), default_timeout=60)
    at.run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert "Group by: this dataset has no metadata column to group by." in captions
    assert not [s for s in at.selectbox if s.label == "Group by"]


def test_an_export_from_the_grouped_page_records_each_groups_counts(grouped_page, tmp_path):
    import json

    at = grouped_page
    at.selectbox(key="prune_group_by").set_value("source").run()
    at.slider(key="ratio_low").set_value(40.0).run()
    out = tmp_path / "kept.parquet"
    at.text_input(key="export_out").set_value(str(out)).run()
    at.button(key="export_button").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    groups = json.loads((tmp_path / "kept.parquet.manifest.json").read_text())["selection"]
    groups = groups["groups"]
    assert groups["by"] == "source"
    expected = expected_table(0.4)
    assert {r["group"]: r["pruned"] for r in groups["rows"]} == {
        g: v["pruned"] for g, v in expected.items()
    }
