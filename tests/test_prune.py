"""Pruning semantics: floor(r·N + 0.5) per tail, ties by sample id, unscored samples always kept."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from core.errors import InputError
from core.histogram import ranking_histogram
from core.prune import kept_curve, load_ranking, prune_preview, select, selected_row_idx
from core.rules import Rule, count_for_ratio, cuts, prune_counts, rule_from_args
from core.store import Store
from tests.helpers_runs import add_done_run, ingest_rows

# ---- pure arithmetic, no database ------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "n", "expected"),
    [
        (0.0, 10, 0),
        (1.0, 10, 10),
        (0.25, 10, 3),  # 2.5 rounds half up
        (0.35, 10, 4),  # 3.5 exactly, although 0.35 * 10 is 3.4999... in binary floats
        (0.249, 10, 2),
        (0.5, 1, 1),
        (0.3, 7, 2),  # 2.1 + 0.5
        (0.07, 50, 4),  # 3.5
        (1 / 3, 3, 1),
    ],
)
def test_count_for_ratio_rounds_half_up(ratio, n, expected):
    assert count_for_ratio(ratio, n) == expected


def test_ratio_rules_prune_each_tail():
    scores = np.arange(20, dtype=float)
    assert prune_counts(scores, Rule("prune-low", 0.25)) == (5, 0)
    assert prune_counts(scores, Rule("prune-high", None, 0.125)) == (0, 3)  # 2.5 -> 3
    assert prune_counts(scores, Rule("keep-middle", 0.1, 0.35)) == (2, 7)


def test_keep_middle_high_tail_never_takes_what_low_took():
    # 0.5 + 0.5 of 3 rounds to 2 + 2: the high tail gets the one sample left.
    assert prune_counts(np.arange(3.0), Rule("keep-middle", 0.5, 0.5)) == (2, 1)


def test_thresholds_prune_strictly_below_and_above():
    scores = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0])
    assert prune_counts(scores, Rule("prune-low", 2.0, by="threshold")) == (1, 0)
    assert prune_counts(scores, Rule("prune-low", 2.5, by="threshold")) == (3, 0)
    assert prune_counts(scores, Rule("prune-high", None, 4.0, by="threshold")) == (0, 1)
    assert prune_counts(scores, Rule("keep-middle", 2.0, 4.0, by="threshold")) == (1, 1)
    assert prune_counts(scores, Rule("prune-low", 99.0, by="threshold")) == (7, 0)


def test_cuts_name_the_last_pruned_and_first_kept_scores():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    rule = Rule("keep-middle", 0.2, 0.4)
    c = cuts(scores, *prune_counts(scores, rule), rule)
    assert (c["low"].last_pruned, c["low"].first_kept, c["low"].line) == (1.0, 2.0, 1.5)
    assert (c["high"].last_pruned, c["high"].first_kept) == (4.0, 3.0)
    nothing = cuts(scores, 0, 0, Rule("prune-low", 0.0))["low"]
    assert nothing.last_pruned is None and nothing.line == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "prune-low"}, "needs --ratio"),
        ({"kind": "prune-low", "ratio": 1.5}, "between 0 and 1"),
        ({"kind": "prune-high", "ratio": -0.1}, "between 0 and 1"),
        ({"kind": "keep-middle", "ratio_low": 0.6, "ratio_high": 0.5}, "more than 1"),
        ({"kind": "keep-middle", "ratio": 0.2}, "--ratio-low and --ratio-high"),
        ({"kind": "keep-middle", "ratio_low": 0.2}, "needs a ratio"),
        ({"kind": "prune-low", "ratio_low": 0.2}, "takes --ratio"),
        ({"kind": "drop-some", "ratio": 0.2}, "unknown rule"),
        ({"kind": "prune-low", "ratio": 0.1, "threshold": 3.0}, "not both"),
        ({"kind": "keep-middle", "threshold_low": 5, "threshold_high": 1}, "above high"),
        ({"kind": "prune-low", "ratio": math.nan}, "finite"),
    ],
)
def test_bad_rules_say_what_to_do(kwargs, message):
    with pytest.raises(InputError, match=message):
        rule_from_args(**kwargs)


def test_rule_round_trips_through_a_dict():
    rule = rule_from_args("keep-middle", threshold_low=1.5, threshold_high=3.0)
    assert Rule.from_dict(rule.to_dict()) == rule
    assert rule.by == "threshold" and "1.5" in rule.describe()


# ---- against a brute-force ranking over a real store -------------------------------------------


def brute_force_pruned(scores: dict[str, float | None], kind: str, a: float, b: float) -> set:
    """The contract, spelled out in plain Python."""
    ranked = sorted(
        (sid for sid, s in scores.items() if s is not None and not math.isnan(s)),
        key=lambda sid: (
            scores[sid],
            (0, int(sid), sid) if sid.lstrip("-").isdigit() else (1, 0, sid),
        ),
    )
    n = len(ranked)
    low = math.floor(a * n + 0.5) if kind in ("prune-low", "keep-middle") else 0
    high = math.floor(b * n + 0.5) if kind in ("prune-high", "keep-middle") else 0
    high = min(high, n - low)
    return set(ranked[:low]) | set(ranked[n - high :])


@pytest.fixture(scope="module")
def tied_store(tmp_path_factory):
    """40 samples with heavily tied scores, numeric and text ids, and some unscored samples."""
    tmp_path = tmp_path_factory.mktemp("tied")
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    rnd = random.Random(3)
    ids = [str(i) for i in range(30)] + ["a", "b", "c10", "c9", "07", "7x", "-3", "zz", "10b", "x"]
    rnd.shuffle(ids)
    ingest_rows(
        store, tmp_path, [{"id": i, "text": f"text of {i} " * 3} for i in ids], id_column="id"
    )
    scores: dict[str, float | None] = {i: float(rnd.choice([1, 2, 2, 3, 5])) for i in ids}
    for i in ids[:4]:
        scores[i] = None
    scores[ids[4]] = math.nan
    rows = {
        i: {"bits_per_token": s, "n_tokens": 10, "n_bytes": 12}
        for i, s in scores.items()
        if i != ids[5]  # one sample the run never scored at all
    }
    run = add_done_run(store, "docs", rows)
    scores[ids[5]] = None
    return store, run, scores


@pytest.mark.parametrize(
    ("kind", "a", "b"),
    [
        ("prune-low", 0.25, 0.0),
        ("prune-low", 0.5, 0.0),
        ("prune-high", 0.0, 0.3),
        ("keep-middle", 0.1, 0.2),
        ("keep-middle", 0.0, 0.0),
        ("prune-low", 1.0, 0.0),
    ],
)
def test_selection_matches_brute_force_with_ties_and_unscored(tied_store, kind, a, b):
    store, run, scores = tied_store
    ranking = load_ranking(store, run, "bits_per_token")
    rule = Rule(kind, a if kind != "prune-high" else None, b if kind != "prune-low" else None)
    selection = select(ranking, rule)
    id_of = dict(store.query("SELECT row_idx, sample_id FROM samples WHERE dataset = 'docs'"))
    pruned = {id_of[r] for r in selected_row_idx(ranking, selection, "pruned")}
    kept = {id_of[r] for r in selected_row_idx(ranking, selection, "kept")}
    assert pruned == brute_force_pruned(scores, kind, a, b)
    assert kept == set(scores) - pruned
    unscored = {i for i, s in scores.items() if s is None or math.isnan(s)}
    assert unscored <= kept and len(unscored) == selection.n_unscored == 6
    assert selection.n_scored == 34 and selection.n_kept + selection.n_pruned == 40


def test_numeric_ids_tie_break_numerically(store, tmp_path):
    ids = ["10", "9", "100", "b", "a", "2"]
    ingest_rows(store, tmp_path, [{"id": i, "text": "same"} for i in ids], id_column="id")
    run = add_done_run(store, "docs", {i: {"bits_per_token": 1.0, "n_bytes": 4} for i in ids})
    ranking = load_ranking(store, run, "bits_per_token")
    id_of = dict(store.query("SELECT row_idx, sample_id FROM samples"))
    assert [id_of[r] for r in ranking.row_idx] == ["2", "9", "10", "100", "a", "b"]


def test_preview_counts_shares_borderline_and_curve(store, tmp_path):
    rows = [{"id": str(i), "text": "x" * (i + 1)} for i in range(10)]
    ingest_rows(store, tmp_path, rows, id_column="id")
    run = add_done_run(
        store,
        "docs",
        {
            str(i): {"bits_per_token": float(10 - i), "n_tokens": i + 1, "n_bytes": i + 1}
            for i in range(10)
        },
    )
    preview = prune_preview(store, run, "bits_per_token", Rule("prune-low", 0.3), n_borderline=2)
    s = preview.selection
    # Lowest scores are ids 9, 8, 7 (10, 9, 8 tokens): 27 of 55 tokens pruned.
    assert (s.n_pruned, s.n_kept, s.n_unscored) == (3, 7, 0)
    assert s.kept_tokens == 28 and s.kept_tokens_share == pytest.approx(28 / 55)
    assert s.kept_bytes_share == pytest.approx(28 / 55)
    assert s.cuts["low"].last_pruned == 3.0 and s.cuts["low"].first_kept == 4.0
    assert list(preview.borderline["sample_id"]) == ["8", "7", "6", "5"]
    assert list(preview.borderline["side"]) == ["pruned", "pruned", "kept", "kept"]
    assert list(preview.borderline["rank"]) == [2, 3, 4, 5]
    assert set(preview.random_pruned["sample_id"]) == {"9", "8", "7"}
    again = prune_preview(store, run, "bits_per_token", Rule("prune-low", 0.3), n_random=2, seed=1)
    same = prune_preview(store, run, "bits_per_token", Rule("prune-low", 0.3), n_random=2, seed=1)
    assert list(again.random_pruned["sample_id"]) == list(same.random_pruned["sample_id"])
    curve = preview.curve.set_index("pruned_ratio")
    assert curve.loc[0.0, "kept_tokens_share"] == 1.0
    assert curve.loc[0.3, "current"] and curve.loc[0.3, "kept_tokens_share"] == pytest.approx(
        28 / 55
    )


def test_curve_of_keep_middle_keeps_the_split(store, tmp_path):
    ingest_rows(store, tmp_path, [{"id": str(i), "text": "t"} for i in range(100)], id_column="id")
    run = add_done_run(
        store, "docs", {str(i): {"bits_per_token": float(i), "n_bytes": 1} for i in range(100)}
    )
    ranking = load_ranking(store, run, "bits_per_token")
    curve = kept_curve(ranking, Rule("keep-middle", 0.1, 0.3)).set_index("pruned_ratio")
    assert curve.loc[0.4, "kept_bytes_share"] == pytest.approx(0.6)
    assert curve.loc[0.8, "kept_bytes_share"] == pytest.approx(0.2)
    assert curve["kept_tokens_share"].isna().all()  # no n_tokens in this run


def test_ranking_refuses_unfinished_runs_and_replaced_datasets(store, tmp_path):
    ingest_rows(store, tmp_path, [{"text": "a"}, {"text": "b"}])
    run = add_done_run(store, "docs", {"0": {"bits_per_token": 1.0}, "1": {"bits_per_token": 2.0}})
    with pytest.raises(InputError, match="no values for word_entropy"):
        load_ranking(store, run, "word_entropy")
    with pytest.raises(InputError, match="unknown score"):
        load_ranking(store, run, "nonsense")
    ingest_rows(store, tmp_path, [{"text": "c"}], replace=True)
    with pytest.raises(InputError, match="changed since run"):
        load_ranking(store, run, "bits_per_token")
    with store.transaction() as con:
        con.execute("UPDATE runs SET status = 'cancelled' WHERE run_id = ?", [run])
    with pytest.raises(InputError, match="not finished"):
        load_ranking(store, run, "bits_per_token")


def test_histogram_of_a_ranking_counts_every_scored_sample_in_its_bin(tied_store):
    store, run, scores = tied_store
    ranking = load_ranking(store, run, "bits_per_token")
    hist = ranking_histogram(ranking, bins=4)  # scores 1, 2, 3, 5: edges 1, 2, 3, 4, 5
    assert hist.edges == [1.0, 2.0, 3.0, 4.0, 5.0]
    values = [s for s in scores.values() if s is not None and not math.isnan(s)]
    assert hist.counts == [
        values.count(1.0),
        values.count(2.0),
        values.count(3.0),
        values.count(5.0),
    ]
    assert hist.n_left_out == 6


def test_an_integer_score_ranks_a_run_that_left_samples_unscored(tmp_path):
    """n_bytes of a `--limit` run: the unscored rows made NaN, which an int64 array cannot hold
    (an internal error before)."""
    from core.scoring import ScoreOptions, score_dataset

    store = Store(tmp_path / "ws.duckdb")
    ingest_rows(store, tmp_path, [{"text": "word " * (i + 1)} for i in range(10)])
    run = score_dataset(store, "docs", ScoreOptions(model="none", limit=6)).run_id
    ranking = load_ranking(store, run, "n_bytes")
    assert len(ranking.scores) == 6 and len(ranking.unscored_row_idx) == 4
    sel = select(ranking, Rule("prune-low", 0.5))
    assert (sel.k_low, sel.n_scored, sel.n_unscored) == (3, 6, 4)  # the 4 unscored are kept


def test_weighted_at_either_end_needs_both_columns_as_between(tmp_path):
    """α = 1 dropped the word-entropy term, so a sample without word entropy was ranked at α = 1
    and unscored at α = 0.9999."""
    store = Store(tmp_path / "ws.duckdb")
    ingest_rows(
        store, tmp_path, [{"id": f"s{i}", "text": f"t {i}"} for i in range(6)], id_column="id"
    )
    scores = {
        f"s{i}": {"bits_per_token": float(i), "word_entropy": None if i == 0 else float(6 - i)}
        for i in range(6)
    }
    run = add_done_run(store, "docs", scores)
    for alpha in ("0", "0.5", "0.9999", "1"):
        ranking = load_ranking(store, run, f"weighted:{alpha}")
        assert len(ranking.scores) == 5 and len(ranking.unscored_row_idx) == 1, alpha


def test_the_token_share_of_a_partial_run_says_whose_tokens(tmp_path, capsys):
    """Unscored samples have no token count: the share is of the scored samples' tokens, and the
    dry run's line says so instead of passing it for the dataset's."""
    from core.cli import main
    from tests.helpers_runs import model_scores

    store = Store(tmp_path / "ws.duckdb")
    ingest_rows(
        store, tmp_path, [{"id": f"s{i}", "text": f"t {i}"} for i in range(8)], id_column="id"
    )
    scored = {f"s{i}": model_scores(float(i + 1), 10, 20) for i in range(4)}  # s4..s7 unscored
    run = add_done_run(store, "docs", scored)
    argv = ["export", "--run", run, "--rule", "prune-low", "--ratio", "0.5", "--dry-run"]
    assert main([*argv, "--db", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "4 unscored (kept)" in out and "50.0% of the scored samples' tokens kept" in out
