"""The app tells the truth at a glance: the Score page's model choice, checks, phases, finished
runs and Resume; blanks for missing values; Validate's axis with one ratio."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import processes
from core.jobs import CancelToken
from core.scoring import ScoreOptions, get_run, list_runs, score_dataset
from core.store import Store
from tests.conftest import ROOT
from tests.helpers_pages import by_label, open_page
from tests.helpers_runs import ingest_rows


@pytest.fixture
def ui_store(tmp_path, monkeypatch) -> Store:
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_rows(store, tmp_path, [{"text": f"words and more words {i}"} for i in range(30)])
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    return store


def choose_model(at: AppTest, starting: str) -> None:
    choice = at.selectbox(key="score_model_choice")
    choice.select_index(next(i for i, o in enumerate(choice.options) if o.startswith(starting)))
    at.run()


def n_jobs(store: Store) -> int:
    return store.query("SELECT count(*) FROM jobs")[0][0]


def test_the_model_path_field_shows_only_for_another_model_and_is_checked_first(
    ui_store, tmp_path, tiny_model_dir
):
    at = open_page("2_Score.py")
    assert at.selectbox(key="score_model_choice").value.startswith("Shipped probe")
    assert not [t for t in at.text_input if t.label == "Model directory or hub id"]
    choose_model(at, "Another")
    path = by_label(at.text_input, "Model directory or hub id")

    path.set_value(str(tmp_path / "no-such-model")).run()
    at.button(key="score_start").click().run()
    assert "does not exist" in at.error[0].value and not at.success
    pickled = shutil.copytree(tiny_model_dir, tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    by_label(at.text_input, "Model directory or hub id").set_value(str(pickled)).run()
    at.button(key="score_start").click().run()
    assert "tick “Allow pickle (.bin) weights” under Advanced" in at.error[0].value
    assert n_jobs(ui_store) == 0  # refused at once, before any job


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="a machine with a CUDA GPU can start it"
)
def test_a_device_this_machine_lacks_is_refused_before_the_job(ui_store):
    at = open_page("2_Score.py")
    at.selectbox(key="score_device").set_value("cuda").run()
    at.button(key="score_start").click().run()
    assert "no CUDA GPU" in at.error[0].value and "choose Device cpu or auto" in at.error[0].value
    assert "--device" not in at.error[0].value and not at.success
    assert n_jobs(ui_store) == 0  # said at once, not 25 s later by the job


def test_a_job_says_what_it_does_before_its_first_batch(ui_store):
    me = processes.current()  # a live process stands in for the job's
    with ui_store.transaction() as con:
        con.execute(
            "INSERT INTO jobs (job_id, kind, ref, argv, pid, pid_start, status, phase, "
            "created_at) VALUES ('score-1', 'score', 'docs', '[]', ?, ?, 'running', "
            "'loading the model', now())",
            [me.pid, me.start],
        )
    at = open_page("2_Score.py")
    assert any("score-1` · docs · loading the model…" in p.proto.text for p in at.get("progress"))


def test_a_job_records_its_phases(ui_store, monkeypatch):
    with ui_store.transaction() as con:
        con.execute(
            "INSERT INTO jobs (job_id, kind, argv, status, created_at) "
            "VALUES ('score-2', 'score', '[]', 'running', now())"
        )
    monkeypatch.setenv("INFOPRUNE_JOB_ID", "score-2")
    score_dataset(ui_store, "docs", ScoreOptions(model="none"))
    # The last phase of a model-free run: the dataset-level duplicates pass after scoring.
    assert ui_store.query("SELECT phase FROM jobs")[0][0] == "finding duplicates"


def test_a_stopped_run_resumes_and_the_page_says_when_it_finished(ui_store):
    cancelled = CancelToken()
    cancelled.cancel()
    run_id = score_dataset(ui_store, "docs", ScoreOptions(model="none"), cancel=cancelled).run_id
    assert get_run(ui_store, run_id)["status"] == "cancelled"
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/2_Score.py").run()  # through the app's navigation: links work
    runs = next(d for d in at.dataframe if "run_id" in d.value.columns)
    assert runs.proto.placeholder == "—"
    assert runs.value["finished"].isna().all() and runs.value["started"].notna().all()

    at.button(key=f"resume_{run_id}").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    deadline = time.monotonic() + 120
    while get_run(ui_store, run_id)["status"] != "done":
        assert time.monotonic() < deadline, "the resumed run did not finish"
        time.sleep(0.3)
    at.run()
    assert list(list_runs(ui_store)["run_id"]) == [run_id]  # the same run, resumed
    assert f"Run `{run_id}` finished at" in at.success[0].value
    assert "30 samples scored" in at.success[0].value
    link = at.get("page_link")[0]
    assert (link.proto.label, link.proto.page) == ("Explore its scores", "Explore")
    assert at.session_state["current_run"] == run_id
    runs = next(d for d in at.dataframe if "run_id" in d.value.columns).value
    assert runs["finished"].notna().all()


def numbers(values) -> list[float]:
    """A Plotly JSON array: a list, or {"dtype", "bdata"} (base64 of the raw array)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), values["dtype"]).tolist()
    return list(values)


def add_validation(store: Store, run_id: str, ratio: float) -> str:
    """A finished validation of one ratio and two seeds, rows as `infoprune validate` writes."""
    vid = "val-test"
    with store.transaction() as con:
        con.execute(
            "INSERT INTO validations (validation_id, run_id, score, rule, ratios, settings, "
            "status, n_done, n_total, created_at) VALUES (?, ?, 'bits_per_token', 'prune-low', "
            "?, '{}', 'done', 6, 6, now())",
            [vid, run_id, json.dumps([{"ratio": ratio, "low": ratio, "high": None}])],
        )
        for seed in (0, 1):
            for arm, r, bpt in (
                ("full", None, 9.0),
                ("pruned", ratio, 9.4),
                ("random", ratio, 8.8),
            ):
                con.execute(
                    "INSERT INTO validation_results (validation_id, arm, ratio, seed, "
                    "val_bits_per_token, val_bits_per_byte, train_tokens, steps, seconds) "
                    "VALUES (?, ?, ?, ?, ?, ?, 1000, 10, 1.0)",
                    [vid, arm, r, seed, bpt + seed / 10, bpt / 4],
                )
    return vid


def test_validate_with_one_ratio_has_a_sensible_axis_and_blanks(ui_store):
    run_id = score_dataset(ui_store, "docs", ScoreOptions(model="none")).run_id
    add_validation(ui_store, run_id, 0.2)
    at = open_page("6_Validate.py")
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    axis = figure["layout"]["xaxis"]
    assert axis["range"][0] == 0 and 0.2 < axis["range"][1] <= 0.3
    assert axis["tickvals"] == [0, 0.2]
    xs = [numbers(trace["x"])[0] for trace in figure["data"]]
    assert len(xs) == 2 and all(0.19 < x < 0.21 for x in xs) and xs[0] != xs[1]
    assert all(d.proto.placeholder == "—" for d in at.dataframe)


def test_the_app_module_has_no_ingest_form_left_on_home(ui_store):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert not [b for b in at.button if b.label == "Ingest"]
    link = at.get("page_link")[0]
    assert link.proto.page == "Data" and "Add a dataset" in link.proto.label
    assert os.environ["INFOPRUNE_DB"] == str(ui_store.path)


def test_compare_tables_show_missing_values_as_a_dash(ui_store):
    score_dataset(ui_store, "docs", ScoreOptions(model="none"))
    at = open_page("5_Compare.py")
    tables = at.dataframe
    assert tables and all(d.proto.placeholder == "—" for d in tables)


@pytest.mark.parametrize(
    "page", ["3_Explore.py", "4_Prune_and_Export.py", "5_Compare.py", "6_Validate.py"]
)
def test_runs_of_a_deleted_dataset_are_not_offered(ui_store, tmp_path, page):
    """The newest run's dataset deleted: the pages open on a run they can show (no traceback),
    say why one is missing, and the run is back once the same content is ingested again."""
    from core.datasets import drop_dataset

    kept = score_dataset(ui_store, "docs", ScoreOptions(model="none")).run_id
    rows = [{"text": f"other words {i}"} for i in range(20)]
    ingest_rows(ui_store, tmp_path, rows, name="gone")
    orphan = score_dataset(ui_store, "gone", ScoreOptions(model="none")).run_id
    drop_dataset(ui_store, "gone")
    at = open_page(page)
    assert not at.exception and not at.error
    picker = at.selectbox(key=page_run_key(page))
    assert picker.value == kept and not [o for o in picker.options if orphan in o]
    assert any("1 run not listed: scored on 'gone'" in c.value for c in at.caption)

    ingest_rows(ui_store, tmp_path, rows, name="gone")
    at = open_page(page)
    assert [o for o in at.selectbox(key=page_run_key(page)).options if orphan in o]


def page_run_key(page: str) -> str:
    return {
        "3_Explore.py": "explore_run",
        "4_Prune_and_Export.py": "prune_run",
        "5_Compare.py": "compare_run",
        "6_Validate.py": "validate_run",
    }[page]


def test_explore_opens_a_sample_of_a_dataset_of_texts_alone(ui_store):
    """No metadata column at all (a JSONL of texts): the open sample's metadata query selected
    nothing, and DuckDB refused it ("SELECT list is empty"), a traceback on the page."""
    run_id = score_dataset(ui_store, "docs", ScoreOptions(model="none")).run_id
    at = open_page("3_Explore.py")
    assert at.selectbox(key="explore_run").value == run_id and not at.error
    assert any(s.value.startswith("Sample ") for s in at.subheader)


def test_a_job_error_shows_on_its_dataset_until_a_later_job_replaces_it(ui_store, tmp_path):
    ingest_rows(ui_store, tmp_path, [{"text": f"other {i}"} for i in range(5)], name="other")

    def add_job(job_id: str, ref: str, message: str | None) -> str:
        with ui_store.transaction() as con:
            con.execute(
                "INSERT INTO jobs (job_id, kind, ref, argv, status, message, log_path, "
                "created_at) VALUES (?, 'score', ?, '[]', 'failed', ?, NULL, now())",
                [job_id, ref, message],
            )
        return job_id

    at = AppTest.from_file(str(ROOT / "pages" / "2_Score.py"), default_timeout=60)
    at.session_state["score_jobs"] = [
        add_job("score-1", "docs", "error: first try failed"),
        add_job("score-2", "other", "error: other failed"),
    ]
    at.session_state["score_dataset"] = "docs"
    at.run()
    assert [e.value for e in at.error] == ["Job `score-1` stopped — error: first try failed"]
    at.session_state["score_jobs"] += [add_job("score-3", "docs", None)]  # a later job, fine
    at.run()
    assert not at.exception and not at.error


def test_a_run_under_a_second_reads_the_same_everywhere(ui_store):
    score_dataset(ui_store, "docs", ScoreOptions(model="none"))
    at = open_page("2_Score.py")
    runs = next(d.value for d in at.dataframe if "duration" in d.value.columns)
    assert list(runs["duration"]) == ["< 1 s"]
