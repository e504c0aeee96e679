"""The Export section of Prune & Export: file names that follow the settings, kept and pruned
together, and a new run ranked by its own default score."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from core.scoring import list_runs
from core.store import Store
from tests.helpers_pages import open_page
from tests.helpers_runs import add_done_run, ingest_rows, model_scores

N = 20
ROWS = [{"id": f"s{i:02d}", "text": f"sample {i} says " + "hello " * (i + 1)} for i in range(N)]
# s00 is the least informative ... s19 the most; word_entropy runs the other way.
SCORES = {
    f"s{i:02d}": model_scores(float(i + 1) * (i + 1), i + 1, 10 * (i + 1))
    | {"word_entropy": float(N - i)}
    for i in range(N)
}


@pytest.fixture
def page_store(tmp_path, monkeypatch):
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_rows(store, tmp_path, ROWS, id_column="id")
    add_done_run(store, "docs", SCORES)
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    return store


def write_to(at: AppTest) -> str:
    return at.text_input(key="export_out").value


def export(at: AppTest) -> None:
    at.button(key="export_button").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_the_default_name_follows_ratio_part_score_and_format(page_store):
    at = open_page("4_Prune_and_Export.py")
    assert write_to(at).endswith("/exports/docs-bits_per_token-prune-low-0.1-kept.parquet")
    at.slider(key="ratio_low").set_value(20.0).run()
    assert write_to(at).endswith("docs-bits_per_token-prune-low-0.2-kept.parquet")
    export(at)
    kept = write_to(at)
    at.radio(key="export_part").set_value("pruned").run()
    assert write_to(at).endswith("docs-bits_per_token-prune-low-0.2-pruned.parquet")
    # "Replace it if it exists" replaces the file of these settings, never the kept one.
    at.checkbox(key="export_overwrite").check().run()
    export(at)
    assert pq.read_table(kept).num_rows == 16
    assert pq.read_table(write_to(at)).column("id").to_pylist() == ["s00", "s01", "s02", "s03"]
    at.selectbox(key="prune_score").set_value("word_entropy").run()
    at.selectbox(key="export_format").set_value("jsonl").run()
    assert write_to(at).endswith("docs-word_entropy-prune-low-0.2-pruned.jsonl")
    assert not at.warning


def test_a_typed_name_is_kept_with_a_warning_once_the_settings_change(page_store, tmp_path):
    at = open_page("4_Prune_and_Export.py")
    mine = str(tmp_path / "mine.parquet")
    at.text_input(key="export_out").set_value(mine).run()
    assert not at.warning
    at.slider(key="ratio_low").set_value(30.0).run()
    assert write_to(at) == mine
    assert "docs-bits_per_token-prune-low-0.3-kept.parquet" in at.warning[0].value
    at.button(key="export_use_default").click().run()
    assert write_to(at).endswith("docs-bits_per_token-prune-low-0.3-kept.parquet")
    assert not at.warning


def test_kept_and_pruned_together_from_the_page(page_store, tmp_path):
    at = open_page("4_Prune_and_Export.py")
    at.slider(key="ratio_low").set_value(25.0).run()
    at.radio(key="export_part").set_value("both").run()
    assert write_to(at).endswith("-prune-low-0.25-kept.parquet")
    kept = tmp_path / "x-kept.parquet"
    at.text_input(key="export_out").set_value(str(kept)).run()
    assert f"`{tmp_path / 'x-pruned.parquet'}`" in " ".join(c.value for c in at.caption)
    export(at)
    pruned = tmp_path / "x-pruned.parquet"
    assert pq.read_table(kept).column("id").to_pylist() == [f"s{i:02d}" for i in range(5, N)]
    assert pq.read_table(pruned).column("id").to_pylist() == [f"s{i:02d}" for i in range(5)]
    line = at.success[0].value
    assert "15 kept samples" in line and "5 pruned samples" in line and str(pruned) in line
    manifest = json.loads((tmp_path / "x-pruned.parquet.manifest.json").read_text())
    assert manifest["output"]["pair"]["path"] == str(kept)
    assert [b.label for b in at.get("download_button")] == [
        "Download x-kept.parquet",
        "Download x-pruned.parquet",
    ]


def test_another_run_is_ranked_by_its_own_default_score(page_store):
    first = list_runs(page_store)["run_id"][0]
    second = add_done_run(page_store, "docs", SCORES, model="other-model")
    at = open_page("4_Prune_and_Export.py")
    assert at.selectbox(key="prune_run").value == second  # the newest
    at.selectbox(key="prune_score").set_value("word_entropy").run()
    assert "word_entropy" in write_to(at)
    at.selectbox(key="prune_run").set_value(first).run()
    assert at.selectbox(key="prune_score").value == "bits_per_token"
    assert "docs-bits_per_token-prune-low" in write_to(at)
