"""How the measures of one run agree: rank correlations, paired values, overlap of pruned sets.

Everything is computed in DuckDB over the run's rows. Scores come from the registry
(`score_expression`), so derived scores such as `weighted:0.5` compare like stored ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from core.errors import InputError
from core.measures.registry import (
    WEIGHTED_PARTS,
    score_expression,
    stored_score_names,
    weighted_name,
)
from core.scoring import get_run, run_score_columns
from core.store import Store

SPEARMAN_MAX_ROWS = 1_000_000  # above this, ranks come from a fixed-seed reservoir sample
SCATTER_MAX_POINTS = 50_000  # WebGL draws this many points smoothly
RULES = ("prune-low", "prune-high", "keep-middle")


@dataclass
class Spearman:
    matrix: pd.DataFrame  # score x score, Spearman's rho
    n_rows: int  # rows with every score present that the ranks were computed on
    sampled: bool


@dataclass
class Overlap:
    n_a: int  # pruned by score a
    n_b: int
    n_both: int
    jaccard: float | None  # |A ∩ B| / |A ∪ B|; None when neither prunes anything
    only_a: pd.DataFrame  # pruned by a, kept by b: sample_id, a, b, text
    only_b: pd.DataFrame


def load_run_scores(store: Store, run_id: str, derived: bool = True) -> list[str]:
    """Scores that hold values in RUN (stored columns, then the weighted mix when it applies)."""
    present = set(run_score_columns(store, run_id))
    names = [n for n in stored_score_names() if n in present]
    if derived and set(WEIGHTED_PARTS) <= present:
        names.append(weighted_name(0.5))
    return names


def prune_counts(n: int, rule: str, ratios: tuple[float, ...]) -> tuple[int, int]:
    """How many of N ranked samples a rule prunes from the low end and from the high end.

    prune-low r and prune-high r prune floor(r·N + 0.5) samples; keep-middle (lo, hi) prunes
    floor(lo·N + 0.5) from the low end and floor(hi·N + 0.5) from the high end.
    """
    expected = 2 if rule == "keep-middle" else 1
    if rule not in RULES:
        raise InputError(f"unknown rule '{rule}'; rules are: {', '.join(RULES)}")
    if len(ratios) != expected or any(not 0 <= r <= 1 for r in ratios):
        raise InputError(f"rule {rule} takes {expected} ratio(s) between 0 and 1, got {ratios}")
    low, high = {"prune-low": (ratios[0], 0.0), "prune-high": (0.0, ratios[0])}.get(rule, ratios)
    if low + high > 1:
        raise InputError(f"keep-middle ratios {low} + {high} prune more than everything")
    return math.floor(low * n + 0.5), math.floor(high * n + 0.5)


def load_spearman(
    store: Store, run_id: str, scores: list[str] | None = None, max_rows: int = SPEARMAN_MAX_ROWS
) -> Spearman:
    """Spearman's rho between every pair of stored scores, over the rows where all are present.

    Ties get their average rank, as in `pandas.Series.rank()`; runs above MAX_ROWS rows are ranked
    on a reservoir sample of MAX_ROWS rows (a rho from a million rows moves in the third decimal).
    """
    scores = scores or load_run_scores(store, run_id, derived=False)
    cols = [score_expression(s) for s in scores]
    if any(c not in stored_score_names() for c in cols):
        raise InputError("the rank correlation matrix takes stored scores only")
    rows = f"SELECT {', '.join(cols)} FROM scores WHERE run_id = ? AND " + " AND ".join(
        f"{c} IS NOT NULL" for c in cols
    )
    with store.connect() as con:
        n = con.execute(f"SELECT count(*) FROM ({rows})", [run_id]).fetchall()[0][0]
        sampled = n > max_rows
        ranks = ", ".join(
            f"rank() OVER (ORDER BY {c}) + (count(*) OVER (PARTITION BY {c}) - 1) / 2 AS r{i}"
            for i, c in enumerate(cols)
        )
        pairs = [(i, j) for i in range(len(cols)) for j in range(i + 1, len(cols))]
        corr = ", ".join([f"corr(r{i}, r{j})" for i, j in pairs] + ["count(*)"])
        source = _sample(rows, max_rows) if sampled else rows
        values = con.execute(
            f"SELECT {corr} FROM (SELECT {ranks} FROM ({source}))", [run_id]
        ).fetchall()[0]
    matrix = pd.DataFrame(1.0, index=scores, columns=scores)
    for (i, j), rho in zip(pairs, values[:-1], strict=True):
        matrix.iloc[i, j] = matrix.iloc[j, i] = math.nan if rho is None else rho
    return Spearman(matrix=matrix, n_rows=int(values[-1]), sampled=sampled)


def load_scatter(
    store: Store, run_id: str, x: str, y: str, max_points: int = SCATTER_MAX_POINTS
) -> tuple[pd.DataFrame, int]:
    """(sample_id, x, y) for samples with both scores, sampled down to MAX_POINTS; and the total."""
    rows = (
        f"SELECT sample_id, x, y FROM (SELECT sample_id, {score_expression(x)} AS x, "
        f"{score_expression(y)} AS y FROM scores WHERE run_id = ?) "
        "WHERE x IS NOT NULL AND y IS NOT NULL"
    )
    with store.connect() as con:
        n = con.execute(f"SELECT count(*) FROM ({rows})", [run_id]).fetchall()[0][0]
        if n > max_points:
            rows = _sample(rows, max_points)
        return con.execute(rows, [run_id]).df(), n


def _sample(rows: str, k: int) -> str:
    # Sample the filtered rows: USING SAMPLE on a table would sample before the WHERE.
    return f"SELECT * FROM ({rows}) USING SAMPLE reservoir({int(k)} ROWS) REPEATABLE (0)"


def _pruned(col: str, name: str) -> str:
    """A CTE of the samples pruned by COL over CTE `s`: ranked by (score, sample_id) ascending,
    params (k_low, n - k_high); samples without a score are neither ranked nor pruned."""
    return (
        f"{name} AS (SELECT sample_id FROM (SELECT sample_id, row_number() OVER "
        f"(ORDER BY {col}, sample_id) AS rn FROM s WHERE {col} IS NOT NULL) "
        "WHERE rn <= ? OR rn > ?)"
    )


def _scores_cte(a: str, b: str) -> str:
    # The run filter sits in the same SELECT as the expressions: window-based scores need it.
    return (
        f"s AS (SELECT sample_id, {score_expression(a)} AS a, {score_expression(b)} AS b "
        "FROM scores WHERE run_id = ?)"
    )


def load_pruned_ids(
    store: Store, run_id: str, score: str, rule: str, ratios: tuple[float, ...]
) -> set[str]:
    """The sample ids RULE prunes from RUN when ranking by SCORE."""
    s = _scores_cte(score, score)
    with store.connect() as con:
        n = con.execute(f"WITH {s} SELECT count(a) FROM s", [run_id]).fetchall()[0][0]
        low, high = prune_counts(n, rule, ratios)
        rows = con.execute(
            f"WITH {s}, {_pruned('a', 'p')} SELECT sample_id FROM p", [run_id, low, n - high]
        ).fetchall()
    return {r[0] for r in rows}


def load_prune_overlap(
    store: Store,
    run_id: str,
    a: str,
    b: str,
    rule: str,
    ratios: tuple[float, ...],
    n_examples: int = 5,
) -> Overlap:
    """How far the sets that scores A and B prune under one rule agree, with examples of each."""
    prune_counts(0, rule, ratios)
    dataset = get_run(store, run_id)["dataset"]
    s = _scores_cte(a, b)
    order = " DESC" if rule == "prune-high" else ""
    with store.connect() as con:
        n_a, n_b = con.execute(f"WITH {s} SELECT count(a), count(b) FROM s", [run_id]).fetchall()[0]
        low_a, high_a = prune_counts(n_a, rule, ratios)
        low_b, high_b = prune_counts(n_b, rule, ratios)
        con.execute(
            f"CREATE TEMP TABLE pruned AS WITH {s}, {_pruned('a', 'pa')}, {_pruned('b', 'pb')} "
            "SELECT s.*, sample_id IN (SELECT sample_id FROM pa) AS in_a, "
            "sample_id IN (SELECT sample_id FROM pb) AS in_b FROM s WHERE in_a OR in_b",
            [run_id, low_a, n_a - high_a, low_b, n_b - high_b],
        ).fetchall()
        in_a, in_b, both = con.execute(
            "SELECT count_if(in_a), count_if(in_b), count_if(in_a AND in_b) FROM pruned"
        ).fetchall()[0]

        def examples(mine: str, other: str, col: str) -> pd.DataFrame:
            return con.execute(
                "SELECT p.sample_id, p.a, p.b, left(x.text, 400) AS text FROM pruned p "
                "JOIN samples x ON x.dataset = ? AND x.sample_id = p.sample_id "
                f"WHERE p.{mine} AND NOT p.{other} ORDER BY p.{col}{order}, p.sample_id LIMIT ?",
                [dataset, n_examples],
            ).df()

        only_a = examples("in_a", "in_b", "a")
        only_b = examples("in_b", "in_a", "b")
    union = in_a + in_b - both
    return Overlap(
        n_a=in_a,
        n_b=in_b,
        n_both=both,
        jaccard=both / union if union else None,
        only_a=only_a,
        only_b=only_b,
    )
