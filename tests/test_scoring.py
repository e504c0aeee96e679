"""Scoring runs end to end: exact stored numbers, reuse, cancel, kill -9 and resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.cli import main
from core.engine import naive_score
from core.ingest import ingest_dataset
from core.models import load_model
from core.scoring import ScoreOptions, get_run, list_runs, score_dataset
from core.store import Store
from tests.conftest import ROOT, corpus_texts, write_jsonl


def _ingest(store, tmp_path, n: int, name: str = "docs", max_chars: int = 1500) -> list[dict]:
    rows = [{"id": r["id"], "text": r["text"][:max_chars]} for r in corpus_texts(n)]
    rows.append({"id": "one-char", "text": "x"})
    ingest_dataset(store, str(write_jsonl(tmp_path / f"{name}.jsonl", rows)), name, id_column="id")
    return rows


def _scores(store: Store, run_id: str) -> dict[str, tuple]:
    rows = store.query(
        "SELECT sample_id, n_tokens, bits_total, bits_per_token, bits_per_byte, n_bytes "
        "FROM scores WHERE run_id = ?",
        [run_id],
    )
    return {r[0]: r[1:] for r in rows}


def test_stored_bits_equal_one_sample_at_a_time(store, tmp_path, tiny_model_dir):
    rows = _ingest(store, tmp_path, 30)
    outcome = score_dataset(
        store, "docs", ScoreOptions(model=str(tiny_model_dir), dtype="float32", window=64)
    )
    assert outcome.status == "done" and not outcome.reused
    lm = load_model(str(tiny_model_dir))
    got = _scores(store, outcome.run_id)
    assert len(got) == len(rows)
    for row in rows:
        ref = naive_score(lm.model, lm.tokenizer, row["text"], 64, 32)
        n_tokens, bits, bpt, bpb, n_bytes = got[row["id"]]
        assert n_tokens == ref.n_tokens
        assert bits == pytest.approx(ref.bits_total, rel=1e-4)
        assert n_bytes == len(row["text"].encode())
        assert bpt == pytest.approx(bits / n_tokens)
        assert bpb == pytest.approx(bits / n_bytes)
    run = get_run(store, outcome.run_id)
    assert run["n_done"] == run["n_total"] == len(rows)
    assert run["settings"]["window"] == 64 and run["settings"]["stride"] == 32
    assert run["model_hash"] and run["tokens_per_s"] > 0


def test_same_configuration_reuses_the_finished_run(store, tmp_path, tiny_model_dir):
    _ingest(store, tmp_path, 5)
    opts = ScoreOptions(model=str(tiny_model_dir), dtype="float32")
    first = score_dataset(store, "docs", opts)
    again = score_dataset(store, "docs", opts)
    assert again.reused and again.run_id == first.run_id
    other = score_dataset(store, "docs", ScoreOptions(model=str(tiny_model_dir), limit=3))
    assert other.run_id != first.run_id
    assert len(_scores(store, other.run_id)) == 3


def test_a_dataset_with_the_same_content_gets_runs_of_its_own(store, tmp_path):
    """A run of 'docs' is not reused for 'copy' (same file, another name): it would show under
    'docs', and outlive neither's deletion."""
    from core.datasets import drop_dataset

    _ingest(store, tmp_path, 5)
    _ingest(store, tmp_path, 5, name="copy")
    opts = ScoreOptions(model="none")
    first = score_dataset(store, "docs", opts)
    copy = score_dataset(store, "copy", opts)
    assert not copy.reused and copy.run_id != first.run_id
    assert get_run(store, copy.run_id)["dataset"] == "copy"
    assert set(_scores(store, copy.run_id)) == set(_scores(store, first.run_id))
    drop_dataset(store, "docs")
    again = score_dataset(store, "copy", opts)
    assert again.reused and again.run_id == copy.run_id
    assert list(list_runs(store, "copy")["run_id"]) == [copy.run_id]


def _cli(db: Path, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", *args, "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def _wait_for_progress(store: Store, proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.query("SELECT n_done, n_total FROM runs")
        if rows and 0 < rows[0][0] < rows[0][1]:
            return rows[0][0]
        if proc.poll() is not None:
            pytest.fail(f"scoring ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.2)
    pytest.fail("no progress committed in time")


@pytest.mark.slow
def test_kill_9_then_same_command_resumes_without_gaps_or_repeats(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "ws.duckdb")
    rows = _ingest(store, tmp_path, 150, max_chars=2000)
    args = ("score", "--dataset", "docs", "--model", str(tiny_model_dir), "--dtype", "float32")
    proc = _cli(store.path, *args)
    done_before = _wait_for_progress(store, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert get_run(store, list_runs(store)["run_id"][0])["status"] == "stopped"

    again = _cli(store.path, *args)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    run_id = out.strip().splitlines()[-1]
    counts = store.query(
        "SELECT count(*), count(DISTINCT sample_id) FROM scores WHERE run_id = ?", [run_id]
    )[0]
    assert counts == (len(rows), len(rows))
    run = get_run(store, run_id)
    assert run["status"] == "done" and run["n_done"] == len(rows)
    assert done_before < len(rows)

    # The resumed numbers are the numbers a plain one-sample-at-a-time computation gives.
    lm = load_model(str(tiny_model_dir))
    stored = _scores(store, run_id)
    for row in rows[::15]:
        ref = naive_score(lm.model, lm.tokenizer, row["text"], 64, 32)
        assert stored[row["id"]][1] == pytest.approx(ref.bits_total, rel=1e-4)


@pytest.mark.slow
def test_cancel_stops_cleanly_and_the_run_resumes(tmp_path, tiny_model_dir):
    store = Store(tmp_path / "ws.duckdb")
    rows = _ingest(store, tmp_path, 150, max_chars=2000)
    args = ("score", "--dataset", "docs", "--model", str(tiny_model_dir), "--dtype", "float32")
    proc = _cli(store.path, *args)
    _wait_for_progress(store, proc)
    assert main(["cancel", list_runs(store)["run_id"][0], "--db", str(store.path)]) == 0
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    run_id = out.strip().splitlines()[-1]
    assert get_run(store, run_id)["status"] == "cancelled"
    resumed = score_dataset(store, "docs", ScoreOptions(model=str(tiny_model_dir), dtype="float32"))
    assert resumed.run_id == run_id and resumed.status == "done"
    assert store.query(
        "SELECT count(DISTINCT sample_id), count(*) FROM scores WHERE run_id = ?", [run_id]
    )[0] == (len(rows), len(rows))


def _bad_model_dirs(tmp_path: Path, tiny_model_dir: Path) -> dict[str, Path]:
    import shutil

    not_causal = tmp_path / "bert"
    not_causal.mkdir()
    (not_causal / "config.json").write_text(json.dumps({"model_type": "vit"}))
    no_tokenizer = tmp_path / "no-tok"
    no_tokenizer.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / f, no_tokenizer / f)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    return {"not_causal": not_causal, "no_tokenizer": no_tokenizer, "pickled": pickled}


@pytest.mark.parametrize(
    "case, extra, needle",
    [
        ("missing", ["--model", "/nonexistent/model"], "does not exist"),
        ("not_causal", [], "not a causal language model"),
        ("no_tokenizer", [], "no tokenizer"),
        ("pickled", [], "--allow-pickle"),
        ("cuda", ["--device", "cuda"], "no CUDA GPU"),
        ("unknown_dataset", ["--dataset", "nope"], "unknown dataset 'nope'"),
        ("window", ["--window", "4096"], "exceeds the model's maximum"),
        ("limit", ["--limit", "0"], "positive"),
        ("model_free_window", ["--model", "none", "--window", "5"], "--window apply to a model"),
        ("model_free_stride", ["--model", "none", "--stride", "2"], "--stride apply to a model"),
    ],
)
def test_bad_input_fails_before_any_work_in_one_line(
    store, tmp_path, tiny_model_dir, capsys, case, extra, needle
):
    _ingest(store, tmp_path, 3)
    dirs = _bad_model_dirs(tmp_path, tiny_model_dir)
    args = ["score", "--dataset", "docs", "--model", str(dirs.get(case, tiny_model_dir))]
    args += extra
    code = main([*args, "--db", str(store.path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert store.query("SELECT count(*) FROM runs")[0][0] == 0


def test_model_free_run_needs_no_model(store, tmp_path, capsys):
    rows = _ingest(store, tmp_path, 5)
    assert main(["score", "--dataset", "docs", "--model", "none", "--db", str(store.path)]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    scores = _scores(store, run_id)
    assert len(scores) == len(rows)
    assert all(v[0] is None and v[1] is None for v in scores.values())


def test_progress_reaches_the_caller(store, tmp_path, tiny_model_dir):
    _ingest(store, tmp_path, 20)
    seen = []
    score_dataset(store, "docs", ScoreOptions(model=str(tiny_model_dir)), on_progress=seen.append)
    assert seen and seen[-1].n_done == seen[-1].n_total == 21
    assert seen[-1].tokens_per_s > 0


def test_options_round_trip_through_the_score_flags():
    from core.cli import build_parser
    from core.options import from_args

    def parsed(argv: list[str]) -> ScoreOptions:
        args = build_parser().parse_args(["score", "--dataset", "d", *argv])
        return from_args(ScoreOptions, args)

    every = ScoreOptions(
        model="m", device="cpu", dtype="float32", window=64, stride=16, max_batch_tokens=512,
        limit=9, trust_remote_code=True, allow_pickle=True, compile=True,
    )  # fmt: skip
    for opts in (every, ScoreOptions(model="m")):
        assert parsed(opts.argv()) == opts
    assert parsed(["--model", "m"]) == ScoreOptions(model="m")
