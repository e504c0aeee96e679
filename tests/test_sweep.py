"""validate --sweep: the grid, the shared full arm, the time budget and resume, the ranking."""

from __future__ import annotations

import pytest

from core.cli import main
from core.ingest import ingest_dataset
from core.scoring import ScoreOptions, score_dataset
from core.store import Store
from core.sweep import (
    best_row,
    export_command,
    list_sweeps,
    make_sweep,
    recommendation,
    run_sweep,
    sweep_argv,
    sweep_table,
)
from core.validation_spec import PRESETS, ValidateOptions
from tests.conftest import corpus_texts, write_jsonl
from tests.test_validate import TEST_SETTINGS, Recorder


@pytest.fixture(scope="module", autouse=True)
def _small_presets():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "default", TEST_SETTINGS)
        mp.setitem(PRESETS, "quick", TEST_SETTINGS)
        yield


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    store = Store(tmp / "ws.duckdb", lock_timeout=30)
    docs = [{**r, "text": r["text"][:600]} for r in corpus_texts(150)]
    ingest_dataset(store, str(write_jsonl(tmp / "d.jsonl", docs)), "d", id_column="id")
    run_id = score_dataset(store, "d", ScoreOptions(model="none")).run_id
    return store, run_id


def test_the_grid_runs_middle_ratio_first_and_stratifies_by_source(scored):
    store, run_id = scored
    sweep = make_sweep(store, ValidateOptions(run_id, sweep=True))
    configs = [(s.rule, sum(s.ratios[0]), s.score, s.stratify) for s in sweep.specs]
    # 3 rules x 3 ratios x whole/within source x the two scores a model-free run holds
    assert len(configs) == 3 * 3 * 2 * 2 and len(set(configs)) == len(configs)
    assert {c[1] for c in configs[:12]} == {0.2} and {c[3] for c in configs} == {None, "source"}
    assert {c[2] for c in configs} == {"word_entropy", "gzip_bits_per_byte"}
    assert all(s.seeds == 1 for s in sweep.specs) and sweep.minutes == 30
    assert make_sweep(store, ValidateOptions(run_id, sweep=True, quick=True)).minutes == 5
    assert sweep_argv(sweep)[:4] == ["validate", "--run", run_id, "--sweep"]


def test_sweep_trains_the_full_arm_once_stops_at_its_budget_and_continues(scored):
    store, run_id = scored
    opts = ValidateOptions(run_id, rule="prune-low", ratios="0.2,0.4", sweep=True, minutes=0.01)
    sweep = make_sweep(store, opts)
    assert len(sweep.specs) == 2 * 2 * 2
    rec = Recorder()
    first = run_sweep(store, sweep, trainer=rec)
    assert first.status == "out of time" and first.n_done == 0 and not rec.trained
    waiting = sweep_table(store, sweep.sweep_id)  # nothing run yet: listed, not ranked
    assert set(waiting["status"]) == {"not run"} and waiting["heldout"].isna().all()
    assert recommendation(waiting) == "No configuration has finished yet."

    sweep = make_sweep(store, ValidateOptions(**{**opts.__dict__, "minutes": 30}))
    outcome = run_sweep(store, sweep, trainer=rec)
    assert outcome.status == "done" and outcome.n_done == 8
    # One full arm for all eight configurations, then a pruned and a random arm each.
    assert len(rec.trained) == 1 + 8 * 2
    table = sweep_table(store, sweep.sweep_id)
    assert list(table["rank"]) == list(range(1, 9)) and set(table["status"]) == {"done"}
    effects = table["heldout"].to_list()
    assert effects == sorted(effects)  # best (most negative) first
    assert (table["heldout_low"] <= table["heldout"]).all()
    assert (table["heldout"] <= table["heldout_high"]).all()
    text = recommendation(table)
    assert text.startswith("Best on the held-out set") or text.startswith("Nothing beat random")
    listed = list_sweeps(store, run_id).set_index("sweep_id").loc[sweep.sweep_id]
    assert (listed.n_done, listed.n_total) == (8, 8)

    again = Recorder()
    assert run_sweep(store, sweep, trainer=again).status == "done" and not again.trained


def test_cli_sweep_prints_the_ranked_table_and_the_export_command(scored, capsys):
    store, run_id = scored
    argv = ["validate", "--run", run_id, "--sweep", "--rule", "keep-middle", "--ratios", "0.3"]
    argv += ["--score", "word_entropy", "--db", str(store.path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "keep-middle 0.3 by word_entropy within each source" in out
    assert "keep-middle 0.3 by word_entropy  " in out and "within each nan" not in out
    assert "held-out − random" in out
    if "Nothing beat random" not in out:  # the recommended configuration, ready to export
        assert f"export it: infoprune export --run {run_id} --score word_entropy" in out
        assert "--rule keep-middle --ratio-low 0.15 --ratio-high 0.15" in out
    sweep = make_sweep(store, ValidateOptions(**{**vars(args_of(argv)), "sweep": True}))
    rows = sweep_table(store, sweep.sweep_id)
    command = export_command(store, rows.iloc[0], run_id)
    assert command.startswith(f"infoprune export --run {run_id} --score word_entropy")
    assert "--rule keep-middle --ratio-low 0.15 --ratio-high 0.15" in command


def test_validate_without_a_rule_says_to_pass_one_or_sweep(scored, capsys):
    store, run_id = scored
    assert main(["validate", "--run", run_id, "--db", str(store.path)]) == 2
    assert "--rule is required (or pass --sweep" in capsys.readouterr().err


def test_validate_page_starts_a_sweep_and_shows_the_ranked_table(scored, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import core.jobs
    from tests.conftest import ROOT

    store, run_id = scored
    opts = ValidateOptions(run_id, rule="prune-high", ratios="0.3", sweep=True)
    sweep = make_sweep(store, opts)
    run_sweep(store, sweep)
    started = []
    monkeypatch.setattr(core.jobs, "start_job", lambda s, kind, argv, ref: started.append(argv))
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    at = AppTest.from_file(str(ROOT / "pages" / "6_Validate.py"), default_timeout=60)
    at.session_state["current_sweep"] = sweep.sweep_id
    at.run()
    assert not at.exception
    shown = [d.value for d in at.dataframe if "heldout_verdict" in d.value.columns][0]
    assert list(shown["rank"]) == [1, 2, 3, 4] and set(shown["rule"]) == {"prune-high"}
    assert any(i.value.startswith(("Best on", "Nothing beat random")) for i in at.info)
    opens = [b for b in at.button if b.label.startswith("Open “")]
    assert len(opens) == (best_row(sweep_table(store, sweep.sweep_id)) is not None)

    next(n for n in at.number_input if n.label == "Minutes").set_value(3)
    next(b for b in at.button if b.label == "Start sweep").click().run()
    assert not at.exception and not at.error
    assert started and "--sweep" in started[0] and "--minutes" in started[0]
    assert started[0][started[0].index("--minutes") + 1] == "3"


def args_of(argv: list[str]) -> ValidateOptions:
    """The ValidateOptions the CLI builds from ARGV (after the command name)."""
    import argparse

    from core.options import add_options, from_args

    parser = argparse.ArgumentParser()
    add_options(parser, ValidateOptions)
    parser.add_argument("--db")
    return from_args(ValidateOptions, parser.parse_args(argv[1:]))


def test_best_row_is_better_on_the_target_and_not_worse_held_out():
    import pandas as pd

    from core.sweep import TABLE_COLUMNS

    def row(rank, target, held):
        return {
            **dict.fromkeys(TABLE_COLUMNS),
            "rank": rank,
            "rule": "prune-low",
            "ratio": 0.2,
            "score": "s",
            "seeds": 3,
            "target": -0.1,
            "target_low": -0.2,
            "target_high": -0.05,
            "heldout": 0.1,
            "heldout_low": -0.1,
            "heldout_high": 0.3,
            "target_verdict": target,
            "heldout_verdict": held,
        }

    better, worse, same = "better than random", "worse than random", "no detectable difference"
    table = pd.DataFrame([row(1, better, worse), row(2, better, same), row(3, same, better)])
    assert best_row(table)["rank"] == 2
    assert recommendation(table).startswith("Best on the target set")
    table = pd.DataFrame([row(1, better, worse), row(2, same, better)])
    assert best_row(table) is None
    assert recommendation(table).startswith(
        "Nothing beat random on the target set without being worse on the held-out set"
    )
