"""Hostile input against exports, runs, jobs and the store: each case exits 2 with one `error:`
line and no traceback, and leaves every table and row count as it was (ingest's own cases are in
test_hostile_ingest.py). Each of these once deleted data or lied about a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core import processes, scratch
from core.cli import main
from core.datasets import DatasetChanged, drop_dataset, texts_by_id
from core.errors import InputError
from core.export import HF_MARKER
from core.ingest import ingest_dataset
from core.jobs import DatasetInUse, get_job, start_job
from core.scoring import ScoreOptions, complete_run, get_run, list_runs, score_dataset
from core.store import Store
from tests.conftest import ROOT, corpus_texts, write_jsonl
from tests.helpers_pages import open_page


def snapshot(store: Store) -> dict[str, int]:
    """Every table of the store and its row count."""
    with store.connect() as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in tables}


def cli_error(capsys, *args: str) -> str:
    """Run the CLI expecting bad input: exit 2, exactly one `error:` line, no traceback."""
    capsys.readouterr()
    rc = main(list(args))
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def scored(tmp_path, capsys):
    """A store with a 300-sample dataset and a finished model-free run: (db, run_id)."""
    db = tmp_path / "ws.duckdb"
    rows = [{"id": r["id"], "text": r["text"][:400]} for r in corpus_texts(300)]
    src = write_jsonl(tmp_path / "docs.jsonl", rows)
    assert main(["ingest", str(src), "--name", "docs", "--id-column", "id", "--db", str(db)]) == 0
    assert main(["score", "--dataset", "docs", "--model", "none", "--db", str(db)]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    return db, run_id


def export_args(db: Path, run_id: str, out, fmt: str = "parquet", *extra: str) -> list[str]:
    return [
        "export",
        "--run",
        run_id,
        "--score",
        "gzip_bits_per_byte",
        "--rule",
        "prune-low",
        "--ratio",
        "0.2",
        "--format",
        fmt,
        "--out",
        str(out),
        "--db",
        str(db),
        *extra,
    ]


# ---- 1. an export never writes over the store, a folder or a missing folder ------------------


@pytest.mark.parametrize("target", ["store", "wal", "jobs", "inside-jobs", "link", "scratch"])
def test_export_refuses_to_write_over_the_store(scored, tmp_path, capsys, target):
    db, run_id = scored
    store = Store(db)
    jobs = db.with_name(db.name + ".jobs")
    jobs.mkdir()
    (jobs / "keep.log").write_text("a job's log")
    db.with_name(db.name + ".wal").write_bytes(b"")
    link = tmp_path / "innocent.parquet"
    link.symlink_to(db)
    out = {
        "store": db,
        "wal": db.with_name(db.name + ".wal"),
        "jobs": jobs,
        "inside-jobs": jobs / "x.parquet",
        "link": link,
        "scratch": db.with_name(db.name + ".tmp") / "x.parquet",
    }[target]
    before = snapshot(store)
    for fmt in ("parquet", "hf"):
        line = cli_error(capsys, *export_args(db, run_id, out, fmt, "--overwrite"))
        assert "store" in line
    assert snapshot(store) == before
    assert (jobs / "keep.log").read_text() == "a job's log"
    assert main(["runs", "--db", str(db)]) == 0


@pytest.mark.parametrize("beside", [".tmp", ".jobs"])
def test_a_store_reached_through_a_symlink_guards_the_folders_of_both_names(
    scored, tmp_path, capsys, beside
):
    """The commands keep temporaries and job logs beside the name they were given: an export
    into `alias.duckdb.tmp` would sit where the next command sweeps."""
    db, run_id = scored
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    alias = elsewhere / "alias.duckdb"
    alias.symlink_to(db)
    out = alias.with_name(alias.name + beside)
    line = cli_error(capsys, *export_args(alias, run_id, out, "hf"))
    assert "would write over the store" in line and not out.exists()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_export_never_deletes_a_folder_that_is_not_an_earlier_export(scored, tmp_path, capsys, fmt):
    db, run_id = scored
    folder = tmp_path / "my-data"
    folder.mkdir()
    (folder / "precious.txt").write_text("mine")
    line = cli_error(capsys, *export_args(db, run_id, folder, fmt, "--overwrite"))
    assert "folder" in line
    assert (folder / "precious.txt").read_text() == "mine"
    # Nor the folder that holds the store.
    cli_error(capsys, *export_args(db, run_id, db.parent, "hf", "--overwrite"))
    assert db.exists()


def test_hf_overwrite_replaces_an_earlier_hf_export(scored, tmp_path, capsys):
    import datasets

    db, run_id = scored
    out = tmp_path / "kept-hf"
    assert main(export_args(db, run_id, out, "hf")) == 0
    assert (out / HF_MARKER).is_file()
    assert main(export_args(db, run_id, out, "hf", "--overwrite")) == 0
    assert len(datasets.load_from_disk(str(out))) == 240
    # An export from before the marker existed is recognised by the manifest beside it.
    (out / HF_MARKER).unlink()
    assert main(export_args(db, run_id, out, "hf", "--overwrite")) == 0
    assert not list(tmp_path.glob(f"{scratch.PREFIX}*"))


def test_export_creates_no_folder_but_the_default_exports_folder(scored, tmp_path, capsys):
    db, run_id = scored
    missing = tmp_path / "not" / "there" / "kept.parquet"
    line = cli_error(capsys, *export_args(db, run_id, missing))
    assert "does not exist" in line
    assert not (tmp_path / "not").exists()
    default = db.parent / "exports" / "kept.parquet"
    assert main(export_args(db, run_id, default)) == 0
    assert pq.read_table(default).num_rows == 240


def test_an_existing_manifest_is_not_overwritten_without_asking(scored, tmp_path, capsys):
    db, run_id = scored
    out = tmp_path / "kept.parquet"
    manifest = tmp_path / "kept.parquet.manifest.json"
    manifest.write_text("my notes")
    line = cli_error(capsys, *export_args(db, run_id, out))
    assert "manifest.json already exists" in line
    assert manifest.read_text() == "my notes" and not out.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: m.pop("run"), "'run' is missing"),
        (lambda m: m.pop("output"), "'output' is missing"),
        (lambda m: m.update(rule=None), "'rule' is missing or not an object"),
        (lambda m: m["rule"].update(low="0.2"), "must be a number"),
        (lambda m: m["rule"].update(kind=["prune-low"]), "'rule.kind' has the wrong type"),
        (lambda m: m["rule"].update(kind="prune-all"), "unknown rule"),
        (lambda m: m["output"].update(rows="240"), "'output.rows' has the wrong type"),
        (lambda m: m["output"].update(format="xlsx"), "'output.format'"),
        (lambda m: m.update(score=7), "'score'"),
        (lambda m: m["dataset"].pop("fingerprint"), "'dataset.fingerprint' is missing"),
    ],
)
def test_a_damaged_manifest_is_one_error_line(scored, tmp_path, capsys, damage, message):
    db, run_id = scored
    out = tmp_path / "kept.parquet"
    assert main(export_args(db, run_id, out)) == 0
    spec = json.loads(Path(str(out) + ".manifest.json").read_text())
    damage(spec)
    bad = tmp_path / "bad.manifest.json"
    bad.write_text(json.dumps(spec))
    before = snapshot(Store(db))
    line = cli_error(
        capsys,
        "export",
        "--from-manifest",
        str(bad),
        "--out",
        str(tmp_path / "again"),
        "--db",
        str(db),
    )
    assert message in line
    assert snapshot(Store(db)) == before


def test_killed_export_leaves_a_temporary_that_the_next_export_removes(scored, tmp_path):
    db, run_id = scored
    out = tmp_path / "out" / "kept-hf"
    out.parent.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", *export_args(db, run_id, out, "hf")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list(out.parent.glob(f"{scratch.PREFIX}*")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert proc.poll() is None, "the export finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(out.parent.glob(f"{scratch.PREFIX}*"))  # what kill -9 leaves
    assert not out.exists()
    assert main(export_args(db, run_id, out, "hf")) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["kept-hf", "kept-hf.manifest.json"]


def test_sweeps_remove_only_temporaries_of_ended_processes(tmp_path):
    ended = subprocess.Popen(["true"])
    pid, start = ended.pid, processes.start_time(ended.pid) or 1
    ended.wait()
    stale_file = tmp_path / f"{scratch.PREFIX}{pid}-{start}-0123abcd-kept.parquet"
    stale_dir = tmp_path / f"{scratch.PREFIX}{pid}-{start}-0123abcd-kept.parquet.cache"
    stale_file.write_text("x")
    stale_dir.mkdir()
    live = tmp_path / scratch.temp_name("mine")
    live.write_text("in use")
    lookalike = tmp_path / ".infoprune-tmp-notes.txt"
    lookalike.write_text("a user's file")
    assert sorted(scratch.sweep(tmp_path)) == sorted([stale_file, stale_dir])
    assert live.exists() and lookalike.exists()


def test_any_command_sweeps_the_store_scratch_folder(tmp_path):
    db = tmp_path / "ws.duckdb"
    stale = scratch.scratch_folder(db) / f"{scratch.PREFIX}999999999-1-0123abcd-ingest"
    stale.mkdir(parents=True)
    (stale / "meta.arrows").write_bytes(b"x" * 1000)
    assert main(["datasets", "--db", str(db)]) == 0
    assert not stale.exists()


# ---- 2. a run is done only with every sample scored; no drop under a live job ----------------


@pytest.fixture
def docs_store(tmp_path) -> tuple[Store, Path]:
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    rows = [{"id": r["id"], "text": r["text"][:300]} for r in corpus_texts(300)]
    src = write_jsonl(tmp_path / "docs.jsonl", rows)
    ingest_dataset(store, str(src), "docs", id_column="id")
    return store, src


def delete_behind_its_back(store: Store, name: str) -> None:
    """What a drop that raced past the in-use check (or plain SQL) does."""
    with store.transaction() as con:
        con.execute("DELETE FROM samples WHERE dataset = ?", [name])
        con.execute("DELETE FROM datasets WHERE name = ?", [name])


def test_drop_and_replace_refuse_while_a_run_scores_the_dataset(docs_store, monkeypatch):
    store, src = docs_store
    import core.scoring

    monkeypatch.setattr(core.scoring, "TARGET_CHUNK_SECONDS", 0.0)  # many small chunks
    refused: list[str] = []

    def on_progress(p):
        if refused:
            return
        for attempt in (
            lambda: drop_dataset(store, "docs"),
            lambda: ingest_dataset(store, str(src), "docs", id_column="id", replace=True),
        ):
            with pytest.raises(DatasetInUse) as err:
                attempt()
            refused.append(str(err.value))
            assert "Score page" in err.value.ui_message

    outcome = score_dataset(store, "docs", ScoreOptions(model="none"), on_progress=on_progress)
    assert len(refused) == 2
    assert all("infoprune cancel run-" in r for r in refused)
    assert outcome.status == "done"
    assert get_run(store, outcome.run_id)["n_done"] == 300
    drop_dataset(store, "docs")  # free again once the run has ended


def test_a_dataset_dropped_mid_run_fails_the_run_and_the_next_score_starts_afresh(
    docs_store, monkeypatch
):
    store, src = docs_store
    import core.scoring

    monkeypatch.setattr(core.scoring, "TARGET_CHUNK_SECONDS", 0.0)
    opts = ScoreOptions(model="none", max_batch_tokens=64)
    calls = []

    def drop_once(p):
        calls.append(p.n_done)
        if len(calls) == 1:
            delete_behind_its_back(store, "docs")

    with pytest.raises(DatasetChanged, match="was dropped"):
        score_dataset(store, "docs", opts, on_progress=drop_once)
    run = list_runs(store).iloc[0]
    assert run["status"] == "failed" and "dropped" in run["error"]
    assert run["n_done"] == 0
    assert store.query("SELECT count(*) FROM scores")[0][0] == 0

    ingest_dataset(store, str(src), "docs", id_column="id")
    again = score_dataset(store, "docs", opts)
    assert (again.run_id, again.status, again.reused) == (run["run_id"], "done", False)
    assert store.query("SELECT count(DISTINCT sample_id) FROM scores")[0][0] == 300


def test_a_drop_before_scoring_starts_is_not_done_with_0_of_0(docs_store, monkeypatch):
    store, _ = docs_store
    import core.scoring

    real_read = core.scoring.read_texts_after

    def read_after_a_drop(*args, **kw):
        delete_behind_its_back(store, "docs")
        return real_read(*args, **kw)

    monkeypatch.setattr(core.scoring, "read_texts_after", read_after_a_drop)
    with pytest.raises(DatasetChanged, match="incomplete: dataset 'docs' was dropped"):
        score_dataset(store, "docs", ScoreOptions(model="none"))
    assert list_runs(store).iloc[0]["status"] == "failed"


def test_a_run_missing_a_score_is_never_marked_done(scored):
    db, run_id = scored
    store = Store(db)
    with store.transaction() as con:
        con.execute(
            "DELETE FROM scores WHERE run_id = ? AND sample_id IN "
            "(SELECT sample_id FROM scores WHERE run_id = ? LIMIT 1)",
            [run_id, run_id],
        )
    with pytest.raises(DatasetChanged, match="299 of 300 samples have a score"):
        complete_run(store, run_id)
    assert get_run(store, run_id)["status"] == "failed"


def test_probe_and_validation_readers_name_a_vanished_dataset(scored, capsys):
    db, run_id = scored
    store = Store(db)
    fingerprint = get_run(store, run_id)["fingerprint"]
    ids = [r[0] for r in store.query("SELECT sample_id FROM samples LIMIT 3")]
    assert len(texts_by_id(store, "docs", ids, fingerprint)) == 3
    with pytest.raises(DatasetChanged, match="replaced"):
        texts_by_id(store, "docs", ids, "another-fingerprint")
    with pytest.raises(DatasetChanged, match="lacks 1 of the samples"):
        texts_by_id(store, "docs", [*ids, "no-such-id"], fingerprint)
    delete_behind_its_back(store, "docs")
    with pytest.raises(DatasetChanged, match="dropped"):
        texts_by_id(store, "docs", ids, fingerprint)
    line = cli_error(
        capsys, "validate", "--run", run_id, "--score", "gzip_bits_per_byte", "--rule",
        "prune-low", "--ratios", "0.2", "--quick", "--db", str(db),
    )  # fmt: skip
    assert "unknown dataset 'docs'" in line


# ---- 4. cancel signals only the job's own process ---------------------------------------------


def test_cancel_never_signals_a_process_that_reused_the_pid(scored, tmp_path):
    db, run_id = scored
    store = Store(db)
    # Any program whose command line says "infoprune", with the pid a stale run row records.
    bystander = subprocess.Popen(["bash", "-c", "exec -a infoprune-notes sleep 60"])
    try:
        for pid_start in (None, 12345):  # a row from an older store / a recycled pid
            with store.transaction() as con:
                con.execute(
                    "UPDATE runs SET status = 'running', pid = ?, pid_start = ? WHERE run_id = ?",
                    [bystander.pid, pid_start, run_id],
                )
            assert main(["cancel", run_id, "--db", str(db)]) == 1
            assert bystander.poll() is None
            assert get_run(store, run_id)["status"] == "stopped"
            # ... and it does not block its own resume ("already being scored").
            outcome = score_dataset(store, "docs", ScoreOptions(model="none"))
            assert (outcome.run_id, outcome.status) == (run_id, "done")
    finally:
        bystander.kill()
        bystander.wait()


def test_background_jobs_record_how_they_ended(scored):
    db, _ = scored
    store = Store(db)
    ok = start_job(store, "test", ["datasets"])
    bad = start_job(store, "test", ["drop", "no-such-dataset"])
    deadline = time.monotonic() + 60
    while {get_job(store, j)["status"] for j in (ok, bad)} & {"running"}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    done, failed = get_job(store, ok), get_job(store, bad)
    assert done["status"] == "done" and done["message"] is None and done["finished_at"]
    assert failed["status"] == "failed" and failed["finished_at"]
    assert failed["message"].startswith("error: unknown dataset 'no-such-dataset'")


def test_a_job_killed_with_sigkill_reads_as_stopped(scored):
    db, _ = scored
    store = Store(db)
    with store.connect():  # holds the file, so the job waits for it
        job = start_job(store, "test", ["datasets"])
        assert get_job(store, job)["status"] == "running"
        os.kill(get_job(store, job)["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while get_job(store, job)["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert get_job(store, job)["status"] == "stopped"


# ---- the store path itself ---------------------------------------------------------------------


def test_db_that_is_not_a_duckdb_file_is_refused(tmp_path, capsys):
    parquet = tmp_path / "corpus.parquet"
    parquet.write_bytes((ROOT / "sample_data" / "corpus.parquet").read_bytes())
    line = cli_error(capsys, "datasets", "--db", str(parquet))
    assert "not a DuckDB store" in line
    assert parquet.read_bytes() == (ROOT / "sample_data" / "corpus.parquet").read_bytes()
    line = cli_error(capsys, "datasets", "--db", str(tmp_path))
    assert "is a folder" in line


def test_input_error_carries_the_ui_wording():
    exc = InputError("x exists — pass --overwrite", ui="x exists — tick Replace")
    assert str(exc) == "x exists — pass --overwrite" and exc.ui_message == "x exists — tick Replace"
    assert InputError("plain").ui_message == "plain"


# ---- 7. the cases that already held, kept as a regression net ---------------------------------


def hostile_model_dirs(tmp_path: Path, model: Path) -> dict[str, Path]:
    """Model folders a user might be handed: remote code, pickle weights, not an LM, no weights."""
    import shutil

    remote = tmp_path / "remote-code"
    shutil.copytree(model, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "evil.py").write_text("import os; os.system('touch /tmp/infoprune-pwned')\n")
    pickled = tmp_path / "pickled"
    shutil.copytree(model, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    not_lm = tmp_path / "not-lm"
    not_lm.mkdir()
    (not_lm / "config.json").write_text(json.dumps({"model_type": "vit"}))
    empty = tmp_path / "empty"
    empty.mkdir()
    return {"remote": remote, "pickled": pickled, "not_lm": not_lm, "empty": empty}


@pytest.mark.parametrize(
    "case, needle",
    [
        ("remote", "--trust-remote-code"),
        ("pickled", "--allow-pickle"),
        ("not_lm", "not a causal language model"),
        ("empty", "config.json"),
    ],
)
def test_hostile_model_folders_are_refused(scored, tmp_path, tiny_model_dir, capsys, case, needle):
    db, _ = scored
    model = hostile_model_dirs(tmp_path, tiny_model_dir)[case]
    before = snapshot(Store(db))
    line = cli_error(capsys, "score", "--dataset", "docs", "--model", str(model), "--db", str(db))
    assert needle in line
    assert snapshot(Store(db)) == before
    assert not Path("/tmp/infoprune-pwned").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["score", "--dataset", "docs", "--model", "none", "--window", "0"], "positive"),
        (["score", "--dataset", "docs", "--model", "none", "--limit", "-5"], "positive"),
        (["score", "--dataset", "docs'; DROP TABLE samples; --", "--model", "none"], "unknown"),
        (["drop", "docs'; DROP TABLE samples; --"], "unknown dataset"),
        (["runs", "--dataset", "x' OR '1'='1"], None),
        (["cancel", "run-nope"], "unknown run"),
        (["cancel", "val-nope"], "unknown validation"),
        (["cancel", "probe-nope"], "unknown probe"),
        (["train-probe", "--dataset", "docs", "--out", "{db}"], "is a file"),
        (["export", "--run", "{run}", "--rule", "prune-low", "--ratio", "-0.1"], "between 0"),
        (["export", "--run", "{run}", "--rule", "prune-low", "--ratio", "nan"], "finite"),
        (
            [
                "export",
                "--run",
                "{run}",
                "--rule",
                "prune-low",
                "--ratio",
                "0.2",
                "--score",
                "weighted:0.5; DROP TABLE scores",
            ],
            "score",
        ),  # fmt: skip
        (
            ["validate", "--run", "{run}", "--rule", "prune-low", "--ratios", "0.2,1.5"],
            "between 0 and 1",
        ),
        (
            ["validate", "--run", "run-nope", "--rule", "prune-low", "--ratios", "0.2"],
            "unknown run",
        ),
    ],
)
def test_hostile_arguments_change_nothing(scored, tmp_path, capsys, args, needle):
    db, run_id = scored
    store = Store(db)
    args = [a.format(db=db, run=run_id) for a in args]
    if "--format" not in args and args[0] == "export":
        args += ["--format", "parquet", "--out", str(tmp_path / "x.parquet")]
    before = snapshot(store)
    capsys.readouterr()
    rc = main([*args, "--db", str(db)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if needle is None:  # not an error, but nothing matched: a plain answer, nothing changed
        assert rc in (0, 1) and not err.strip()
    else:
        assert rc == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert snapshot(store) == before
    assert not (tmp_path / "x.parquet").exists()


# ---- the same guarantees through the pages -----------------------------------------------------


@pytest.fixture
def page_store(scored, monkeypatch):
    db, run_id = scored
    monkeypatch.setenv("INFOPRUNE_DB", str(db))
    return Store(db), run_id


def test_prune_page_cannot_write_over_the_store_or_create_folders(page_store, tmp_path):
    store, _ = page_store
    before = snapshot(store)
    at = open_page("4_Prune_and_Export.py")
    at.checkbox(key="export_overwrite").check()
    for out, needle in (
        (store.path, "store"),
        (tmp_path / "new" / "deep" / "kept.parquet", "does not exist"),
    ):
        at.text_input(key="export_out").set_value(str(out))
        at.button(key="export_button").click().run()
        assert not at.exception
        assert [e.value for e in at.error if needle in e.value], [e.value for e in at.error]
    assert snapshot(store) == before
    assert not (tmp_path / "new").exists()


def test_prune_page_speaks_of_the_checkbox_not_the_flag(page_store, tmp_path):
    out = tmp_path / "kept.parquet"
    out.write_text("an earlier file")
    at = open_page("4_Prune_and_Export.py")
    at.text_input(key="export_out").set_value(str(out))
    at.button(key="export_button").click().run()
    errors = [e.value for e in at.error]
    assert errors and "Replace it if it exists" in errors[0] and "--overwrite" not in errors[0]
    assert out.read_text() == "an earlier file"


def test_data_page_delete_is_refused_while_a_run_scores_the_dataset(page_store):
    store, run_id = page_store
    # The run's row names a live process (this one) as its scorer.
    me = processes.current()
    with store.transaction() as con:
        con.execute(
            "UPDATE runs SET status = 'running', pid = ?, pid_start = ? WHERE run_id = ?",
            [me.pid, me.start, run_id],
        )
    at = open_page("1_Data.py")
    next(b for b in at.button if b.label.startswith("Delete")).click().run()
    errors = [e.value for e in at.error]
    assert errors and f"in use by scoring run {run_id}" in errors[0] and "Score page" in errors[0]
    assert store.query("SELECT count(*) FROM samples")[0][0] == 300


def test_the_app_sweeps_the_store_scratch_folder_at_start(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    db = tmp_path / "ws.duckdb"
    stale = scratch.scratch_folder(db) / f"{scratch.PREFIX}999999999-1-0123abcd-ingest"
    stale.mkdir(parents=True)
    monkeypatch.setenv("INFOPRUNE_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert not stale.exists()


# ---- kill -9 at the points a score can be caught, then the same command ------------------------


def wait_until(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the command ended before it could be killed"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["claimed", "first-chunk-committed"])
def test_score_killed_at_any_point_resumes_to_exact_counts(tmp_path, tiny_model_dir, point):
    store = Store(tmp_path / "ws.duckdb")
    rows = [{"id": r["id"], "text": r["text"][:1500]} for r in corpus_texts(120)]
    ingest_dataset(store, str(write_jsonl(tmp_path / "d.jsonl", rows)), "docs", id_column="id")
    args = ["score", "--dataset", "docs", "--model", str(tiny_model_dir), "--dtype", "float32"]
    args += ["--max-batch-tokens", "256", "--db", str(store.path)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "core.cli", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def runs():
        return store.query("SELECT n_done, n_total FROM runs")

    if point == "claimed":
        wait_until(lambda: bool(runs()), proc)
    else:
        wait_until(lambda: bool(runs()) and 0 < runs()[0][0] < runs()[0][1], proc)
    proc.kill()
    proc.communicate()
    assert list_runs(store).iloc[0]["status"] == "stopped"

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    run_id = again.stdout.strip().splitlines()[-1]
    assert store.query(
        "SELECT count(*), count(DISTINCT sample_id) FROM scores WHERE run_id = ?", [run_id]
    )[0] == (120, 120)
    run = get_run(store, run_id)
    assert (run["status"], run["n_done"], run["n_total"]) == ("done", 120, 120)


def test_a_store_file_deleted_under_a_running_process_is_made_anew(tmp_path):
    store = Store(tmp_path / "ws.duckdb")
    assert store.query("SELECT count(*) FROM runs") == [(0,)]
    store.path.unlink()  # e.g. the user removes the workspace while the app runs
    assert store.query("SELECT count(*) FROM runs") == [(0,)]


def test_threads_opening_one_store_at_once_never_fail(tmp_path):
    """The app's sessions are threads of one process: DuckDB's instance cache can refuse one that
    opens the file while another closes it ("Unique file handle conflict"); Store retries it."""
    import threading

    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    store.query("SELECT 1")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                assert store.query("SELECT 42") == [(42,)]
        except BaseException as exc:  # noqa: BLE001 - every failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
