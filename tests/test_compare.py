"""Comparing measures: Spearman vs pandas ranks, pruned sets and Jaccard vs Python sets, page."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from core.compare import (
    load_group_agreement,
    load_prune_overlap,
    load_run_scores,
    load_spearman,
)
from core.datasets import get_dataset
from core.explore import load_scatter
from core.groups import MISSING, GroupBy
from core.ingest import ingest_dataset
from core.rules import Rule
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


def _kind(sample_id: str) -> str | None:
    """Four groups of unequal size and some samples without a kind."""
    i = int(sample_id[1:])
    return None if i % 11 == 0 else f"k{min(i % 7, 3)}"


@pytest.fixture
def run(store: Store, tmp_path: Path) -> str:
    """A dataset of N short texts and a run holding the scores of `_frame()`."""
    df = _frame()
    rows = [{"id": sid, "text": f"text of {sid}", "kind": _kind(sid)} for sid in df.sample_id]
    ingest_dataset(store, str(write_jsonl(tmp_path / "d.jsonl", rows)), "d", id_column="id")
    fingerprint = get_dataset(store, "d").fingerprint
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs (run_id, dataset, fingerprint, engine, model, settings, config_key, "
            "status, created_at, finished_at) "
            "VALUES ('run-x', 'd', ?, 'local', 'm', '{}', 'k', 'done', now(), now())",
            [fingerprint],
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


def _python_pruned(scores: pd.Series, rule: Rule) -> set[str]:
    """The pruning contract of core/prune.py, spelled out over Python lists."""
    ranked = sorted((v, sid) for sid, v in scores.items() if not pd.isna(v))
    n = len(ranked)
    k_low, k_high = (
        math.floor(Fraction(str(r or 0)) * n + Fraction(1, 2)) for r in (rule.low, rule.high)
    )
    k_high = min(k_high, n - k_low)
    return {sid for _, sid in ranked[:k_low] + ranked[n - k_high :]}


def _weighted(df: pd.DataFrame, alpha: float) -> pd.Series:
    z = (df - df.mean()) / df.std(ddof=0)
    return alpha * z["bits_per_token"] + (1 - alpha) * z["word_entropy"]


@pytest.mark.parametrize(
    "rule",
    [Rule("prune-low", low=0.25), Rule("prune-high", high=0.3), Rule("keep-middle", 0.1, 0.2)],
)
def test_pruned_sets_and_jaccard_equal_python_sets(store, run, rule):
    df = _frame().set_index("sample_id")
    set_a = _python_pruned(df["bits_per_token"], rule)
    set_b = _python_pruned(_weighted(df[["bits_per_token", "word_entropy"]], 0.5), rule)

    overlap = load_prune_overlap(store, run, "bits_per_token", "weighted:0.5", rule, 4)
    assert (overlap.n_a, overlap.n_b, overlap.n_both) == (
        len(set_a),
        len(set_b),
        len(set_a & set_b),
    )
    assert overlap.jaccard == pytest.approx(len(set_a & set_b) / len(set_a | set_b))
    assert 0 < len(overlap.only_a) <= 4 and set(overlap.only_a.sample_id) <= set_a - set_b
    assert 0 < len(overlap.only_b) <= 4 and set(overlap.only_b.sample_id) <= set_b - set_a
    assert list(overlap.only_a.columns) == ["sample_id", "a", "b", "text"]
    first = overlap.only_a.iloc[0]
    assert first.text == f"text of {first.sample_id}"
    assert first.a == df.loc[first.sample_id, "bits_per_token"]
    # The clearest disagreement comes first: the most extreme A score on the pruned side.
    extreme = max if rule.kind == "prune-high" else min
    assert first.a == extreme(df.loc[sorted(set_a - set_b), "bits_per_token"])


@pytest.mark.parametrize("rule", [Rule("prune-low", low=0.25), Rule("keep-middle", 0.1, 0.2)])
def test_per_group_spearman_and_overlap_equal_pandas_and_python_sets(store, run, rule):
    df = _frame().set_index("sample_id")
    kinds = pd.Series([_kind(s) or MISSING for s in df.index], index=df.index)
    set_a = _python_pruned(df["bits_per_token"], rule)
    set_b = _python_pruned(df["gzip_bits_per_byte"], rule)

    table = load_group_agreement(
        store, run, "bits_per_token", "gzip_bits_per_byte", rule, GroupBy("kind")
    )
    assert list(table["group"]) == ["k3", "k0", "k1", "k2", MISSING]  # largest first
    for row in table.itertuples():
        members = set(kinds[kinds == row.group].index)
        pairs = df.loc[sorted(members), ["bits_per_token", "gzip_bits_per_byte"]].dropna()
        assert row.samples == len(members)
        assert row.spearman == pytest.approx(pairs.rank().corr().iloc[0, 1], abs=1e-12)
        a, b = set_a & members, set_b & members
        assert (row.pruned_a, row.pruned_b, row.pruned_both) == (len(a), len(b), len(a & b))
        assert row.jaccard == pytest.approx(len(a & b) / len(a | b))
    assert table["pruned_a"].sum() == len(set_a)


def test_same_score_prunes_the_same_set(store, run):
    overlap = load_prune_overlap(store, run, "word_entropy", "word_entropy", Rule("prune-low", 0.4))
    assert overlap.jaccard == 1.0 and overlap.n_both == overlap.n_a > 0
    assert overlap.only_a.empty and overlap.only_b.empty


def test_scatter_keeps_pairs_and_samples_above_the_cap(store, run):
    df = _frame()
    both = df.dropna(subset=["bits_per_token", "word_entropy"])
    points, n = load_scatter(store, run, "bits_per_token", "word_entropy")
    assert n == len(points) == len(both)
    points, n = load_scatter(store, run, "bits_per_token", "weighted:0.5", max_points=50)
    assert n == len(both) and len(points) == 50 and points.notna().all().all()


def test_run_scores_list_what_the_run_holds(store, run):
    assert load_run_scores(store, run) == SCORES + ["weighted:0.5"]
    assert load_run_scores(store, run, alpha=0.75) == SCORES + ["weighted:0.75"]
    assert load_run_scores(store, run, alpha=None) == SCORES


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


def test_compare_page_offers_the_weighted_score_with_alpha(store, run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    at = AppTest.from_file(str(ROOT / "pages" / "5_Compare.py"), default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="overlap_a").value == "bits_per_token"
    at.slider(key="alpha").set_value(0.7).run()
    assert "weighted:0.7" in at.selectbox(key="overlap_b").options
    at.selectbox(key="overlap_b").set_value("weighted:0.7").run()
    assert not at.exception
    assert at.metric[2].label == "Pruned by weighted:0.7" and at.metric[2].value == "57"


def test_compare_page_shows_agreement_per_group(store, run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    at = AppTest.from_file(str(ROOT / "pages" / "5_Compare.py"), default_timeout=60).run()
    at.selectbox(key="compare_group_by").set_value("kind").run()
    assert not at.exception
    assert at.subheader[-1].value == "Per kind"
    table = next(d.value for d in at.dataframe if "spearman" in d.value.columns)
    expected = load_group_agreement(
        store, run, "bits_per_token", "word_entropy", Rule("prune-low", 0.2), GroupBy("kind")
    )
    pd.testing.assert_frame_equal(table, expected.assign(jaccard=expected["jaccard"] * 100))
    assert at.session_state["group_by"] == "kind"  # what the other pages start from
