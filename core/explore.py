"""DuckDB aggregates for the Explore page: histograms, quantiles, sampled scatter, ranked samples.

Every function aggregates or pages inside DuckDB, so the UI never holds more than a page of rows
(or a bounded sample of points) whatever the size of the run. Scores go through the catalogue's
`score_expression`, evaluated over one run's rows in their own SELECT (derived scores need that).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import duckdb
import pandas as pd

from core.datasets import get_dataset
from core.errors import InputError, first_line
from core.histogram import Histogram
from core.ingest import META_KEY
from core.prune import PREVIEW_TEXT_CHARS, point_lookups
from core.rules import rank_order
from core.scores import score_expression, table_columns
from core.scoring import get_run
from core.store import Store, quote_ident

SCATTER_MAX_POINTS = 50_000  # WebGL draws this many points smoothly
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# The page's own columns; a metadata column with one of these names is shown as "meta:NAME".
_RESERVED = {"sample_id", "score", "probe", "text"}


def _clean(expr: str) -> str:
    """The expression with NaN turned into NULL: NaN is "no score", like NULL."""
    return f"CASE WHEN isnan({expr}) THEN NULL ELSE {expr} END"


def _values(score: str) -> str:
    """One run's values of SCORE (param: run_id) as a subquery with column `v`."""
    return f"SELECT sample_id, {_clean(score_expression(score))} AS v FROM scores WHERE run_id = ?"


def load_histogram(
    store: Store, run_id: str, score: str, bins: int = 60, log_x: bool = False
) -> Histogram:
    """Equal-width bins of SCORE over RUN (equal width in log10 when LOG_X)."""
    keep = "v IS NOT NULL" + (" AND v > 0" if log_x else "")
    t = "log10(v)" if log_x else "v"
    values = f"SELECT {t} AS t FROM ({_values(score)}) WHERE {keep}"
    with store.connect() as con:
        lo, hi, n, rows = con.execute(
            f"SELECT min(t), max(t), count(t), (SELECT count(*) FROM scores WHERE run_id = ?) "
            f"FROM ({values})",
            [run_id, run_id],
        ).fetchall()[0]
        if not n:
            return Histogram(score, log_x, [], [], 0, rows)
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        width = (hi - lo) / bins
        counts = dict(
            con.execute(
                f"SELECT least(floor((t - ?) / ?)::BIGINT, ? - 1) AS b, count(*) "
                f"FROM ({values}) GROUP BY b",
                [lo, width, bins, run_id],
            ).fetchall()
        )
    edges = [lo + i * width for i in range(bins)] + [hi]
    if log_x:
        edges = [10**e for e in edges]
    return Histogram(score, log_x, edges, [counts.get(i, 0) for i in range(bins)], n, rows - n)


def load_summary(store: Store, run_id: str, scores: list[str]) -> pd.DataFrame:
    """count, mean, std, min, quantiles and max of each score over RUN (one row per score)."""
    inner = ", ".join(f"{_clean(score_expression(s))} AS c{i}" for i, s in enumerate(scores))
    aggregates = ", ".join(
        f"count(c{i}), avg(c{i}), stddev_pop(c{i}), min(c{i}), "
        f"quantile_cont(c{i}, {list(QUANTILES)}), max(c{i})"
        for i in range(len(scores))
    )
    row = store.query(
        f"SELECT {aggregates} FROM (SELECT {inner} FROM scores WHERE run_id = ?)", [run_id]
    )[0]
    names = ["count", "mean", "std", "min", *[f"p{round(q * 100)}" for q in QUANTILES], "max"]
    records = []
    for i in range(len(scores)):
        count, mean, std, lo, quantiles, hi = row[6 * i : 6 * i + 6]
        records.append([count, mean, std, lo, *(quantiles or [None] * len(QUANTILES)), hi])
    return pd.DataFrame(records, index=scores, columns=names)


def load_scatter(
    store: Store, run_id: str, x: str, y: str, max_points: int = SCATTER_MAX_POINTS
) -> tuple[pd.DataFrame, int]:
    """(sample_id, x, y) of up to MAX_POINTS samples with both scores (NaN counts as none; a
    uniform sample above that), and the total. Explore and Compare draw their scatters from it."""
    rows = (
        f"SELECT sample_id, x, y FROM (SELECT sample_id, {_clean(score_expression(x))} AS x, "
        f"{_clean(score_expression(y))} AS y FROM scores WHERE run_id = ?) "
        "WHERE x IS NOT NULL AND y IS NOT NULL"
    )
    with store.connect() as con:
        n = con.execute(f"SELECT count(*) FROM ({rows})", [run_id]).fetchall()[0][0]
        if n > max_points:
            # Sample the filtered rows: USING SAMPLE on the table would sample before the WHERE.
            rows = (
                f"SELECT * FROM ({rows}) "
                f"USING SAMPLE reservoir({int(max_points)} ROWS) REPEATABLE (0)"
            )
        return con.execute(rows, [run_id]).df(), n


# ---- samples ------------------------------------------------------------------------------------


@dataclass
class SampleFilter:
    """Which samples a ranked list shows; every field is optional."""

    text: str | None = None  # substring (case-insensitive) or regular expression (RE2)
    regex: bool = False
    meta: dict[str, str] = field(default_factory=dict)  # column -> substring of its value
    score_min: float | None = None
    score_max: float | None = None
    hide_probe_training: bool = False  # hide the samples that trained the run's model


def meta_columns(store: Store, dataset: str) -> list[str]:
    """The dataset's original columns other than its text, in order."""
    info = get_dataset(store, dataset)
    return [c["name"] for c in info.columns if c["name"] != info.text_column]


def probe_counts(store: Store, run_id: str) -> dict[str, int]:
    """How many samples of RUN's dataset trained ('train') or validated ('val') the run's model."""
    run = get_run(store, run_id)
    return dict(
        store.query(
            "SELECT role, count(*) FROM probe_samples WHERE model_hash = ? AND fingerprint = ? "
            "GROUP BY role",
            [run["model_hash"], run["fingerprint"]],
        )
    )


def load_samples(
    store: Store,
    run_id: str,
    score: str,
    highest: bool = False,
    filters: SampleFilter | None = None,
    limit: int = 20,
    offset: int = 0,
) -> tuple[pd.DataFrame, int]:
    """A page of RUN's samples, lowest SCORE first (or highest), filtered; and how many match.

    Columns: sample_id, score, the run's score columns, probe (train/val/None), the dataset's
    metadata columns, text (the first characters; `load_sample` gives it all). One connection:
    the page is chosen from `scores` alone, then only its rows are looked up in the other tables.
    """
    filters = filters or SampleFilter()
    expression = _clean(score_expression(score))
    try:
        with store.connect() as con:
            ctx = _run_context(con, run_id)
            if ctx is not None:
                return _samples_page(con, ctx, expression, highest, filters, limit, offset)
    except duckdb.InvalidInputException as exc:
        if filters.regex:
            raise InputError(f"bad regular expression {filters.text!r}: {first_line(exc)}") from exc
        raise
    get_dataset(store, get_run(store, run_id)["dataset"])  # says what is missing
    raise InputError(f"run {run_id} has no dataset")


@dataclass
class _RunContext:
    run_id: str
    dataset: str
    model_hash: str | None
    fingerprint: str
    meta_table: str
    meta_columns: list[str]


def _run_context(con, run_id: str) -> _RunContext | None:
    row = con.execute(
        "SELECT r.dataset, r.model_hash, r.fingerprint, d.meta_table, d.columns, d.text_column "
        "FROM runs r JOIN datasets d ON d.name = r.dataset WHERE r.run_id = ?",
        [run_id],
    ).fetchall()
    if not row:
        return None
    dataset, model_hash, fingerprint, meta_table, columns, text_column = row[0]
    names = [c["name"] for c in json.loads(columns) if c["name"] != text_column]
    return _RunContext(run_id, dataset, model_hash, fingerprint, meta_table, names)


def _samples_page(con, ctx: _RunContext, expression, highest, filters, limit, offset):
    meta = quote_ident(ctx.meta_table)
    key = quote_ident(META_KEY)
    where, params = ["score IS NOT NULL"], [ctx.run_id]
    if filters.score_min is not None:
        where.append("score >= ?")
        params.append(filters.score_min)
    if filters.score_max is not None:
        where.append("score <= ?")
        params.append(filters.score_max)
    for column, value in filters.meta.items():
        if column not in ctx.meta_columns:
            raise InputError(
                f"unknown metadata column '{column}'; columns are: {', '.join(ctx.meta_columns)}"
            )
        if value:
            where.append(
                f"sample_id IN (SELECT {key} FROM {meta} "
                f"WHERE contains(lower(CAST({quote_ident(column)} AS VARCHAR)), lower(?)))"
            )
            params.append(value)
    if filters.text:
        match = "regexp_matches(text, ?)" if filters.regex else "contains(lower(text), lower(?))"
        where.append(f"sample_id IN (SELECT sample_id FROM samples WHERE dataset = ? AND {match})")
        params += [ctx.dataset, filters.text]
    if filters.hide_probe_training:
        where.append(
            "sample_id NOT IN (SELECT sample_id FROM probe_samples "
            "WHERE model_hash = ? AND fingerprint = ? AND role = 'train')"
        )
        params += [ctx.model_hash, ctx.fingerprint]
    score_cols = table_columns()
    matching = (
        f"SELECT * FROM (SELECT sample_id, {expression} AS score, "
        f"{', '.join(quote_ident(c) for c in score_cols)} FROM scores WHERE run_id = ?) "
        f"WHERE {' AND '.join(where)}"
    )
    total = con.execute(f"SELECT count(*) FROM ({matching})", params).fetchall()[0][0]
    page = con.execute(
        f"{matching} ORDER BY {rank_order('score', highest)} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).df()
    page = page.drop(columns=[c for c in score_cols if page[c].isna().all()])
    ids = page["sample_id"].tolist()
    if ids:
        texts = dict(
            con.execute(
                point_lookups(
                    "SELECT sample_id, left(text, ?) FROM samples "
                    "WHERE dataset = ? AND sample_id = ?",
                    len(ids),
                ),
                [x for i in ids for x in (PREVIEW_TEXT_CHARS, ctx.dataset, i)],
            ).fetchall()
        )
        roles = dict(
            con.execute(
                "SELECT sample_id, role FROM probe_samples WHERE model_hash = ? AND "
                "fingerprint = ? AND list_contains(?, sample_id)",
                [ctx.model_hash, ctx.fingerprint, ids],
            ).fetchall()
        )
        metadata = (
            con.execute(point_lookups(f"SELECT * FROM {meta} WHERE {key} = ?", len(ids)), ids)
            .df()
            .set_index(META_KEY)
        )
    else:
        texts, roles, metadata = {}, {}, pd.DataFrame(columns=ctx.meta_columns)
    page["probe"] = [roles.get(i) for i in ids]
    for column in ctx.meta_columns:
        shown = f"meta:{column}" if column in _RESERVED or column in page.columns else column
        page[shown] = page["sample_id"].map(metadata[column]) if ids else []
    page["text"] = [texts.get(i) for i in ids]
    return page, total


def load_sample(store: Store, run_id: str, sample_id: str) -> dict:
    """One sample of RUN in full: text, every stored score, metadata, probe role."""
    run = get_run(store, run_id)
    info = get_dataset(store, run["dataset"])
    with store.connect() as con:
        found = con.execute(
            "SELECT text, n_bytes FROM samples WHERE dataset = ? AND sample_id = ?",
            [info.name, sample_id],
        ).fetchall()
        if not found:
            raise InputError(f"sample '{sample_id}' is not in dataset '{info.name}'")
        scores = con.execute(
            "SELECT * EXCLUDE (run_id, sample_id) FROM scores WHERE run_id = ? AND sample_id = ?",
            [run_id, sample_id],
        ).df()
        meta = con.execute(
            f"SELECT * EXCLUDE ({quote_ident(META_KEY)}) FROM {quote_ident(info.meta_table)} "
            f"WHERE {quote_ident(META_KEY)} = ?",
            [sample_id],
        ).df()
        role = con.execute(
            "SELECT role FROM probe_samples WHERE model_hash = ? AND fingerprint = ? "
            "AND sample_id = ?",
            [run["model_hash"], run["fingerprint"], sample_id],
        ).fetchall()
    return {
        "sample_id": sample_id,
        "text": found[0][0],
        "n_bytes": found[0][1],
        "scores": {
            k: v
            for k, v in (scores.iloc[0].to_dict() if len(scores) else {}).items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        },
        "meta": meta.iloc[0].to_dict() if len(meta) else {},
        "probe": role[0][0] if role else None,
    }
