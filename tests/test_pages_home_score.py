"""The home page (first start, ingest form) and the Score page (start, watch, cancel)."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from core.datasets import get_dataset, list_datasets
from core.scoring import get_run, list_runs
from core.store import Store
from tests.conftest import ROOT, SAMPLE_CORPUS, corpus_texts, write_jsonl
from tests.helpers_pages import by_label, run_app
from tests.helpers_runs import ingest_rows


@pytest.fixture
def ui_store(tmp_path, monkeypatch) -> Store:
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    return store


def pick_model(at: AppTest, starting: str) -> None:
    choice = at.selectbox(key="score_model_choice")
    choice.select_index(next(i for i, o in enumerate(choice.options) if o.startswith(starting)))
    at.run()


def wait_for(condition, timeout: float = 120, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail("condition not met in time")


@pytest.mark.slow
def test_first_start_ingests_the_sample_corpus_and_says_so_once(ui_store):
    at = run_app()
    info = get_dataset(ui_store, "sample")
    assert info.n_samples == pq.read_metadata(SAMPLE_CORPUS).num_rows
    assert info.id_column == "id"
    shown = at.dataframe[0].value
    assert list(shown["name"]) == ["sample"] and int(shown["samples"].iloc[0]) == info.n_samples
    assert len(at.toast) == 1 and at.toast[0].value.startswith(
        f"ingested 'sample': {info.n_samples} samples stored from text column 'text', "
    )
    # Another page load, another tab: the news is not news any more.
    assert not run_app().toast and not at.run().toast


def test_data_page_previews_a_file_then_ingests_it(ui_store, tmp_path):
    ingest_rows(ui_store, tmp_path, [{"text": "already here"}], name="old")
    rows = [{"doc_id": f"d{i}", "body": f"document number {i}", "n": i} for i in range(7)]
    path = write_jsonl(tmp_path / "web-crawl.jsonl", rows)
    at = run_app("pages/1_Data.py")
    by_label(at.text_input, "Path, glob or hub id").set_value(str(path)).run()
    preview = at.dataframe[0].value
    assert list(preview.columns) == ["doc_id", "body", "n"] and len(preview) == 5
    assert by_label(at.selectbox, "Text column").value == "body"
    assert by_label(at.selectbox, "Id column").value == "doc_id"
    assert by_label(at.text_input, "Name").value == "web-crawl"
    by_label(at.button, "Ingest").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.success[0].value.startswith("ingested 'web-crawl': 7 samples stored from text ")
    assert "text column 'body'" in at.success[0].value
    # The page shows the new dataset at once, and the form is empty again.
    assert by_label(at.selectbox, "Dataset").value == "web-crawl"
    assert by_label(at.text_input, "Path, glob or hub id").value == ""
    info = get_dataset(ui_store, "web-crawl")
    assert (info.n_samples, info.id_column, info.source) == (7, "doc_id", str(path))


def test_data_page_errors_speak_the_forms_words(ui_store, tmp_path):
    ingest_rows(ui_store, tmp_path, [{"text": "already here"}], name="old")
    at = run_app("pages/1_Data.py")
    source = by_label(at.text_input, "Path, glob or hub id")
    source.set_value(str(tmp_path / "missing.jsonl")).run()
    assert len(at.error) == 1 and "no such file" in at.error[0].value

    # No column is named like text: the form asks for it instead of naming a flag.
    path = write_jsonl(tmp_path / "odd.jsonl", [{"words": f"w {i}"} for i in range(3)])
    by_label(at.text_input, "Path, glob or hub id").set_value(str(path)).run()
    assert by_label(at.selectbox, "Text column").value is None
    by_label(at.button, "Ingest").click().run()
    assert "choose the text column above" in at.error[0].value
    assert "--" not in at.error[0].value

    by_label(at.text_input, "Name").set_value("old")
    by_label(at.selectbox, "Text column").set_value("words").run()
    by_label(at.button, "Ingest").click().run()
    assert "tick “Replace a dataset of the same name”" in at.error[0].value
    assert "--replace" not in at.error[0].value
    assert sorted(list_datasets(ui_store)["name"]) == ["old"]


def test_an_upload_is_recorded_and_named_by_its_file_name(ui_store, tmp_path):
    ingest_rows(ui_store, tmp_path, [{"text": "already here"}], name="old")
    at = run_app("pages/1_Data.py")
    at.file_uploader[0].set_value(("bad corpus.jsonl", b'{"text": "fine"}\n{broken\n', "x")).run()
    assert "bad corpus.jsonl" in at.error[0].value
    assert "upload" not in at.error[0].value and ".infoprune-tmp" not in at.error[0].value

    data = "".join(f'{{"id": "u{i}", "text": "uploaded text {i}"}}\n' for i in range(4))
    at.file_uploader[0].set_value(("my corpus.jsonl", data.encode(), "x")).run()
    assert not at.error, [e.value for e in at.error]
    assert by_label(at.text_input, "Name").value == "my-corpus"
    by_label(at.button, "Ingest").click().run()
    assert not at.error, [e.value for e in at.error]
    info = get_dataset(ui_store, "my-corpus")
    assert (info.n_samples, info.source) == (4, "my corpus.jsonl")
    assert "Source `my corpus.jsonl`" in " ".join(c.value for c in at.caption)
    leftovers = [p for p in ui_store.path.parent.rglob("*") if "upload" in p.name]
    assert not leftovers


def test_score_page_starts_a_background_run_and_lists_it(ui_store, tmp_path):
    ingest_rows(ui_store, tmp_path, [{"text": f"words and more words {i}"} for i in range(30)])
    at = run_app("pages/2_Score.py")
    pick_model(at, "None")
    by_label(at.button, "Start scoring").click().run()
    assert not at.error, [e.value for e in at.error]
    assert "Started background job" in at.success[0].value
    run_id = wait_for(lambda: (r := list_runs(ui_store)).shape[0] and r["run_id"][0])
    wait_for(lambda: get_run(ui_store, run_id)["status"] == "done")
    at.run()
    runs = next(d.value for d in at.dataframe if "run_id" in d.value.columns)
    assert list(runs["run_id"]) == [run_id] and list(runs["status"]) == ["done"]
    assert list(runs["progress"]) == ["30/30"]


@pytest.mark.slow
def test_score_page_shows_progress_and_cancels(ui_store, tmp_path, tiny_model_dir):
    rows = [{"id": r["id"], "text": r["text"]} for r in corpus_texts(1200)]
    ingest_rows(ui_store, tmp_path, rows, id_column="id")
    at = run_app("pages/2_Score.py")
    pick_model(at, "Another")
    by_label(at.text_input, "Model directory or hub id").set_value(str(tiny_model_dir))
    # Small batches and float32 keep the run long enough to be caught while it runs.
    by_label(at.number_input, "Max batch tokens").set_value(256)
    by_label(at.selectbox, "Precision").select("float32")
    by_label(at.button, "Start scoring").click().run()
    assert not at.error, [e.value for e in at.error]

    def running_run_id():
        runs = list_runs(ui_store)
        mid_run = runs[(runs["status"] == "running") & (runs["n_done"].fillna(0) > 0)]
        mid_run = mid_run[mid_run["n_done"] < mid_run["n_total"]]
        return None if mid_run.empty else mid_run["run_id"].iloc[0]

    run_id = wait_for(running_run_id)
    at.run()
    bars = [p for p in at.get("progress") if run_id in p.proto.text]
    assert bars and "samples" in bars[0].proto.text
    at.button(key=f"cancel_{run_id}").click().run()
    assert not at.exception
    wait_for(lambda: get_run(ui_store, run_id)["status"] == "cancelled")
    run = get_run(ui_store, run_id)
    assert 0 < run["n_done"] < run["n_total"]


def test_app_config_serves_loopback_without_a_file_watcher():
    import tomllib

    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["address"] == "127.0.0.1"
    # A watcher re-walking .venv on every write to ./workspace took a core from scoring jobs.
    assert server["fileWatcherType"] == "none"


@pytest.mark.slow
def test_score_page_trains_a_probe_with_a_live_curve_and_cancels(ui_store, tmp_path):
    rows = [{"id": r["id"], "text": r["text"][:1500]} for r in corpus_texts(60)]
    ingest_rows(ui_store, tmp_path, rows, id_column="id")
    out = tmp_path / "probe"
    at = run_app("pages/2_Score.py")
    by_label(at.text_input, "Output directory (new, or a stopped probe's to resume)").set_value(
        str(out)
    )
    by_label(at.selectbox, "Size").select("tiny")
    by_label(at.number_input, "Training fraction").set_value(0.5)
    by_label(at.number_input, "Vocabulary").set_value(512)
    by_label(at.number_input, "Minutes of training").set_value(0.5)  # bounded if cancel fails
    by_label(at.button, "Train probe").click().run()
    assert not at.error, [e.value for e in at.error]
    assert "Started probe training" in at.success[0].value

    from core.probe import list_probes, probe_curve

    probe_id = wait_for(
        lambda: (p := list_probes(ui_store)).shape[0] and p["step"][0] >= 2 and p["probe_id"][0]
    )
    wait_for(lambda: not probe_curve(ui_store, probe_id).empty)
    at.run()
    assert not at.exception
    assert any("step" in p.proto.text for p in at.get("progress"))
    assert at.get("plotly_chart"), "the loss curve is drawn"
    at.button(key="cancel_probe").click().run()
    wait_for(lambda: list_probes(ui_store)["status"][0] in ("cancelled", "stopped"))
    assert (out / "checkpoint").exists()


def test_score_page_says_what_the_stride_costs_on_this_dataset(ui_store, tmp_path):
    from core.scoring import ScoreOptions, score_dataset, token_counts
    from core.windows import positions_per_token

    rows = [{"text": r["text"]} for r in corpus_texts(40)]
    ingest_rows(ui_store, tmp_path, rows)
    at = run_app("pages/2_Score.py")
    pick_model(at, "Shipped probe")
    caption = next(c.value for c in at.caption if "positions per scored token" in c.value)
    # No run yet: the shipped probe's window of 256 with its default stride, on long samples.
    assert "Window 256, stride 128" in caption and "**2.00 positions" in caption
    assert "much longer than the window" in caption

    probe = str(ROOT / "sample_data" / "probe")
    run_id = score_dataset(ui_store, "docs", ScoreOptions(model=probe)).run_id
    counts = token_counts(ui_store, run_id)
    at = run_app("pages/2_Score.py")
    pick_model(at, "Shipped probe")
    by_label(at.number_input, "Stride (0 = window/2)").set_value(200).run()
    caption = next(c.value for c in at.caption if "positions per scored token" in c.value)
    assert f"token counts of run `{run_id}`" in caption
    assert f"**{positions_per_token(counts, 256, 200):.2f} positions" in caption
    assert f"Stride 255 would compute {positions_per_token(counts, 256, 255):.2f}" in caption
