"""Effects against random: the estimate, an interval over seeds and documents, the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from core.effects import NO_DIFFERENCE, effects
from core.store import Store


def store_with(tmp_path, per_seed_shift: dict[int, np.ndarray], groups=None) -> Store:
    """A validation whose pruned arm costs SHIFT[seed][doc] bits per token more than random."""
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    n_docs = len(next(iter(per_seed_shift.values())))
    tokens = 100 + np.arange(n_docs)
    with store.transaction() as con:
        for doc in range(n_docs):
            group = groups[doc] if groups else None
            con.execute(
                "INSERT INTO validation_eval_docs VALUES ('val-x', 'heldout', ?, ?, ?)",
                [doc, f"s{doc}", group],
            )
        for seed, shift in per_seed_shift.items():
            for doc in range(n_docs):
                for arm, bits in (
                    ("random", 8.0 * tokens[doc]),
                    ("pruned", (8.0 + shift[doc]) * tokens[doc]),
                ):
                    con.execute(
                        "INSERT INTO validation_doc_bits VALUES "
                        "('val-x', 'heldout', ?, 0.2, ?, ?, ?, ?, 400)",
                        [arm, seed, doc, float(bits), int(tokens[doc])],
                    )
    return store


def test_a_consistent_effect_is_worse_than_random_with_a_tight_interval(tmp_path):
    rng = np.random.default_rng(1)
    shifts = {s: 0.3 + rng.normal(0, 0.02, 40) for s in range(3)}
    row = effects(store_with(tmp_path, shifts), "val-x").iloc[0]
    assert row["minus_random"] == pytest.approx(0.3, abs=0.02)
    assert 0.25 < row["ci_low"] < row["minus_random"] < row["ci_high"] < 0.35
    assert row["verdict"] == "worse than random" and row["detectable"] < 0.05


def test_seeds_that_disagree_give_no_detectable_difference(tmp_path):
    # Within each seed every document agrees, so documents alone would look certain.
    shifts = {0: np.full(40, 0.4), 1: np.full(40, -0.3), 2: np.full(40, 0.1)}
    row = effects(store_with(tmp_path, shifts), "val-x").iloc[0]
    assert row["ci_low"] < 0 < row["ci_high"] and row["verdict"] == NO_DIFFERENCE


def test_documents_that_disagree_give_no_detectable_difference_per_group_too(tmp_path):
    shift = np.where(np.arange(40) % 2 == 0, 0.5, -0.5)
    groups = ["a" if d < 20 else "b" for d in range(40)]
    table = effects(store_with(tmp_path, {0: shift}, groups), "val-x", by_group=True)
    overall = table[table["group"].isna()].iloc[0]
    assert overall["verdict"] == NO_DIFFERENCE and overall["docs"] == 40
    assert sorted(table["group"].dropna()) == ["a", "b"]
    assert set(table.loc[table["group"].notna(), "docs"]) == {20}
