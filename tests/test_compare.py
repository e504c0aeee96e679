"""Comparing measures: Spearman vs pandas ranks, pruned sets and Jaccard vs Python sets, page."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from core.compare import (
    load_prune_overlap,
    load_pruned_ids,
    load_run_scores,
    load_scatter,
    load_spearman,
    prune_counts,
)
from core.errors import InputError
from core.ingest import ingest_dataset
from core.scoring import ScoreOptions, score_dataset
from core.store import Store
from tests.conftest import ROOT, corpus_texts, write_jsonl

N = 300
SCORES = ["bits_per_token", "word_entropy", "gzip_bits_per_byte", "n_bytes"]


def _frame() -> pd.DataFrame:
    """Scores with ties (rounded values, a constant block) and missing values."""
    rng = random.Random(7)
    rows = []
    for i in range(N):
        bpt = rng.gauss(4, 1)
        rows.append(
            {
                "sample_id": f"s{i:03d}",
                "bits_per_token": None if i % 37 == 0 else round(bpt, 1),
                "word_entropy": None if i % 53 == 5 else round(bpt * 0.5 + rng.gauss(10, 1), 1),
                "gzip_bits_per_byte": 3.0 if i < 20 else rng.uniform(2, 6),
                "n_bytes": rng.randrange(50, 60),
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture
def run(store: Store, tmp_path: Path) -> str:
    """A dataset of N short texts and a run holding the scores of `_frame()`."""
    df = _frame()
    rows = [{"id": sid, "text": f"text of {sid}"} for sid in df.sample_id]
    ingest_dataset(store, str(write_jsonl(tmp_path / "d.jsonl", rows)), "d", id_column="id")
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs (run_id, dataset, fingerprint, engine, model, settings, config_key, "
            "status, created_at) VALUES ('run-x', 'd', 'f', 'local', 'm', '{}', 'k', 'done', now())"
        )
        con.register("_f", pa.Table.from_pandas(df.assign(run_id="run-x"), preserve_index=False))
        con.execute(
            f"INSERT INTO scores (run_id, sample_id, {', '.join(SCORES)}) SELECT "
            f"run_id, sample_id, {', '.join(SCORES)} FROM _f"
        )
        con.unregister("_f")
    return "run-x"


def test_spearman_equals_pandas_average_ranks(store, run):
    result = load_spearman(store, run)
    assert list(result.matrix.columns) == SCORES
    complete = _frame()[SCORES].dropna()
    expected = complete.rank().corr()
    assert result.n_rows == len(complete) and not result.sampled
    pd.testing.assert_frame_equal(result.matrix, expected, rtol=1e-12, atol=1e-12)

    sampled = load_spearman(store, run, max_rows=100)
    assert sampled.sampled and sampled.n_rows == 100
    assert abs(sampled.matrix.loc["bits_per_token", "word_entropy"] - expected.iloc[0, 1]) < 0.3


def _python_pruned(scores: pd.Series, rule: str, ratios: tuple[float, ...]) -> set[str]:
    ranked = sorted((v, sid) for sid, v in scores.items() if not pd.isna(v))
    n = len(ranked)
    low, high = {"prune-low": (ratios[0], 0), "prune-high": (0, ratios[0])}.get(rule, ratios)
    k_low, k_high = math.floor(low * n + 0.5), math.floor(high * n + 0.5)
    return {sid for _, sid in ranked[:k_low] + ranked[n - k_high :]}


def _weighted(df: pd.DataFrame, alpha: float) -> pd.Series:
    z = (df - df.mean()) / df.std(ddof=0)
    return alpha * z["bits_per_token"] + (1 - alpha) * z["word_entropy"]


@pytest.mark.parametrize(
    "rule, ratios",
    [("prune-low", (0.25,)), ("prune-high", (0.3,)), ("keep-middle", (0.1, 0.2))],
)
def test_pruned_sets_and_jaccard_equal_python_sets(store, run, rule, ratios):
    df = _frame().set_index("sample_id")
    a = df["bits_per_token"]
    b = _weighted(df[["bits_per_token", "word_entropy"]], 0.5)
    set_a, set_b = _python_pruned(a, rule, ratios), _python_pruned(b, rule, ratios)
    assert load_pruned_ids(store, run, "bits_per_token", rule, ratios) == set_a
    assert load_pruned_ids(store, run, "weighted:0.5", rule, ratios) == set_b

    overlap = load_prune_overlap(store, run, "bits_per_token", "weighted:0.5", rule, ratios, 4)
    assert (overlap.n_a, overlap.n_b, overlap.n_both) == (
        len(set_a),
        len(set_b),
        len(set_a & set_b),
    )
    assert overlap.jaccard == pytest.approx(len(set_a & set_b) / len(set_a | set_b))
    assert 0 < len(overlap.only_a) <= 4 and set(overlap.only_a.sample_id) <= set_a - set_b
    assert set(overlap.only_b.sample_id) <= set_b - set_a
    assert list(overlap.only_a.columns) == ["sample_id", "a", "b", "text"]
    assert overlap.only_a.text.iloc[0] == f"text of {overlap.only_a.sample_id.iloc[0]}"


def test_prune_counts_round_half_up_and_reject_bad_rules():
    assert prune_counts(10, "prune-low", (0.25,)) == (3, 0)
    assert prune_counts(10, "prune-high", (0.24,)) == (0, 2)
    assert prune_counts(7, "keep-middle", (0.5, 0.5)) == (4, 4)  # rounding may overlap
    assert prune_counts(0, "prune-low", (1.0,)) == (0, 0)
    for rule, ratios in [
        ("prune-all", (0.1,)),
        ("prune-low", (1.5,)),
        ("prune-low", (0.1, 0.2)),
        ("keep-middle", (0.6, 0.5)),
        ("keep-middle", (0.1,)),
    ]:
        with pytest.raises(InputError):
            prune_counts(10, rule, ratios)


def test_scatter_keeps_pairs_and_samples_above_the_cap(store, run):
    df = _frame()
    both = df.dropna(subset=["bits_per_token", "word_entropy"])
    points, n = load_scatter(store, run, "bits_per_token", "word_entropy")
    assert n == len(points) == len(both)
    points, n = load_scatter(store, run, "bits_per_token", "weighted:0.5", max_points=50)
    assert n == len(both) and len(points) == 50 and points.notna().all().all()


def test_run_scores_list_what_the_run_holds(store, run):
    assert load_run_scores(store, run) == SCORES + ["weighted:0.5"]
    assert load_run_scores(store, run, derived=False) == SCORES


def test_compare_page_renders_a_model_free_run(store, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    rows = [{"id": r["id"], "text": r["text"][:2000]} for r in corpus_texts(60)]
    ingest_dataset(store, str(write_jsonl(tmp_path / "c.jsonl", rows)), "c", id_column="id")
    score_dataset(store, "c", ScoreOptions(model="none"))
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))

    at = AppTest.from_file(str(ROOT / "pages" / "5_Compare.py"), default_timeout=60).run()
    assert not at.exception
    assert [s.value for s in at.subheader] == [
        "Rank agreement",
        "Two measures, sample by sample",
        "Would they prune the same samples?",
    ]
    assert at.selectbox(key="overlap_a").value == "word_entropy"
    assert at.selectbox(key="overlap_b").value == "gzip_bits_per_byte"
    assert at.metric[1].value == "12"  # 20 % of 60 samples

    at.radio(key="rule").set_value("keep-middle").run()
    assert not at.exception and at.metric[1].value == "12"  # 10 % at each end
    at.selectbox(key="overlap_b").set_value("word_entropy").run()
    assert not at.exception and at.metric[0].value == "100.0%"
