"""How the measures of one run agree: rank correlations, paired values, overlap of pruned sets.

Correlations and pairs are computed in DuckDB over the run's rows; pruned sets come from
core.prune, so they are exactly what the Prune page and `infoprune export` would drop. Scores come
from the catalogue (`score_expression`), so derived scores such as `weighted:0.5` work here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.datasets import get_dataset
from core.errors import InputError
from core.groups import GroupBy, group_case_sql, load_groups
from core.ingest import META_KEY
from core.prune import load_ranking, select, selected_row_idx
from core.rules import Rule
from core.scores import WEIGHTED_PARTS, score_expression, stored_score_names, weighted_name
from core.scoring import get_run, run_score_columns
from core.store import Store, quote_ident

SPEARMAN_MAX_ROWS = 1_000_000  # above this, ranks come from a fixed-seed reservoir sample


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


def load_run_scores(store: Store, run_id: str, alpha: float | None = 0.5) -> list[str]:
    """Scores that hold values in RUN: stored columns, then `weighted:ALPHA` when it applies."""
    present = set(run_score_columns(store, run_id))
    names = [n for n in stored_score_names() if n in present]
    if alpha is not None and set(WEIGHTED_PARTS) <= present:
        names.append(weighted_name(alpha))
    return names


def load_spearman(
    store: Store, run_id: str, scores: list[str] | None = None, max_rows: int = SPEARMAN_MAX_ROWS
) -> Spearman:
    """Spearman's rho between every pair of stored scores, over the rows where all are present.

    Ties get their average rank, as in `pandas.Series.rank()`; runs above MAX_ROWS rows are ranked
    on a reservoir sample of MAX_ROWS rows (a rho from a million rows moves in the third decimal).
    """
    scores = scores or load_run_scores(store, run_id, alpha=None)
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


def _sample(rows: str, k: int) -> str:
    # Sample the filtered rows: USING SAMPLE on a table would sample before the WHERE.
    return f"SELECT * FROM ({rows}) USING SAMPLE reservoir({int(k)} ROWS) REPEATABLE (0)"


def _pruned_rows(store: Store, run_id: str, a: str, b: str, rule: Rule):
    """The row_idx that A and that B prune under RULE, most extreme first; and B's ranking."""
    pruned = []
    for score in (a, b):
        ranking = load_ranking(store, run_id, score)
        # Rank order, most extreme first: the examples are the clearest disagreements.
        rows = selected_row_idx(ranking, select(ranking, rule), "pruned")
        pruned.append(rows[::-1] if rule.kind == "prune-high" else rows)
    return pruned[0], pruned[1], ranking


def load_prune_overlap(
    store: Store, run_id: str, a: str, b: str, rule: Rule, n_examples: int = 5
) -> Overlap:
    """How far the sets that scores A and B prune under RULE agree, with examples of each."""
    in_a, in_b, ranking = _pruned_rows(store, run_id, a, b, rule)
    only_a, only_b = in_a[~np.isin(in_a, in_b)], in_b[~np.isin(in_b, in_a)]
    both = len(in_a) - len(only_a)
    union = len(in_a) + len(only_b)
    return Overlap(
        n_a=len(in_a),
        n_b=len(in_b),
        n_both=both,
        jaccard=both / union if union else None,
        only_a=_load_examples(store, run_id, ranking.dataset, a, b, only_a[:n_examples]),
        only_b=_load_examples(store, run_id, ranking.dataset, a, b, only_b[:n_examples]),
    )


def _load_examples(
    store: Store, run_id: str, dataset: str, a: str, b: str, row_idx: np.ndarray
) -> pd.DataFrame:
    """sample_id, both scores and the start of the text of samples ROW_IDX, in that order."""
    rows = [int(r) for r in row_idx]
    return store.query_df(
        f"SELECT x.sample_id, s.a, s.b, left(x.text, 400) AS text FROM samples x LEFT JOIN "
        f"(SELECT sample_id, {score_expression(a)} AS a, {score_expression(b)} AS b FROM scores "
        "WHERE run_id = ?) s ON s.sample_id = x.sample_id "
        "WHERE x.dataset = ? AND list_contains(?, x.row_idx) ORDER BY list_position(?, x.row_idx)",
        [run_id, dataset, rows, rows],
    )


GROUP_AGREEMENT_COLUMNS = [
    "group",
    "samples",
    "spearman",
    "pruned_a",
    "pruned_b",
    "pruned_both",
    "jaccard",
]


def load_group_agreement(
    store: Store, run_id: str, a: str, b: str, rule: Rule, by: GroupBy
) -> pd.DataFrame:
    """Per group of BY (in the groups' order): its samples, Spearman's rho between A and B over
    its samples with both scores, and the overlap of the sets A and B prune of it under RULE.

    The pruned sets are the whole run's (what `load_prune_overlap` compares), counted per group;
    rho ranks each group's samples among themselves (ties: average ranks).
    """
    groups = load_groups(store, get_run(store, run_id)["dataset"], by)
    n = len(groups.labels)
    in_a, in_b, _ = _pruned_rows(store, run_id, a, b, rule)
    both = in_a[np.isin(in_a, in_b)]
    pruned_a, pruned_b, pruned_both = (
        np.bincount(groups.codes[rows], minlength=n) for rows in (in_a, in_b, both)
    )
    union = pruned_a + pruned_b - pruned_both
    rho = _group_spearman(store, run_id, a, b, by, groups.labels)
    return pd.DataFrame(
        {
            "group": groups.labels,
            "samples": groups.sizes,
            "spearman": [rho.get(g, math.nan) for g in groups.labels],
            "pruned_a": pruned_a,
            "pruned_b": pruned_b,
            "pruned_both": pruned_both,
            "jaccard": np.where(union > 0, pruned_both / np.maximum(union, 1), np.nan),
        },
        columns=GROUP_AGREEMENT_COLUMNS,
    )


def _group_spearman(
    store: Store, run_id: str, a: str, b: str, by: GroupBy, labels: list[str]
) -> dict[str, float]:
    """Spearman's rho of A and B within each group (NaN counts as no score)."""
    info = get_dataset(store, get_run(store, run_id)["dataset"])
    clean = "CASE WHEN isnan({0}) THEN NULL ELSE {0} END"
    group = group_case_sql(by, labels, f"m.{quote_ident(by.column)}")
    rows = (
        f"SELECT {group} AS g, s.a, s.b FROM (SELECT sample_id, "
        f"{clean.format(score_expression(a))} AS a, {clean.format(score_expression(b))} AS b "
        f"FROM scores WHERE run_id = ?) s LEFT JOIN {quote_ident(info.meta_table)} m "
        f"ON m.{quote_ident(META_KEY)} = s.sample_id WHERE s.a IS NOT NULL AND s.b IS NOT NULL"
    )
    ranks = ", ".join(
        f"rank() OVER (PARTITION BY g ORDER BY {c}) "
        f"+ (count(*) OVER (PARTITION BY g, {c}) - 1) / 2 AS r{c}"
        for c in ("a", "b")
    )
    found = store.query(
        f"SELECT g, corr(ra, rb) FROM (SELECT g, {ranks} FROM ({rows})) GROUP BY g", [run_id]
    )
    return {g: math.nan if rho is None else rho for g, rho in found}
