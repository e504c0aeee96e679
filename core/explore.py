"""DuckDB aggregates for the Explore page: histograms, quantiles, sampled scatter, ranked samples.

Every function aggregates or pages inside DuckDB, so the UI never holds more than a page of rows
(or a bounded sample of points) whatever the size of the run. Scores go through the catalogue's
`score_expression`, evaluated over one run's rows in their own SELECT (derived scores need that).
Each takes a `SampleFilter` (text, metadata, score ranges, groups), so the charts show the same
samples as the ranked list; a `GroupBy` splits histograms, summaries and the scatter by group.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import duckdb
import pandas as pd
import pyarrow as pa

from core.datasets import get_dataset
from core.errors import InputError, first_line
from core.groups import GroupBy, group_case_sql, load_groups
from core.histogram import Histogram
from core.ingest import META_KEY
from core.prune import PREVIEW_TEXT_CHARS, point_lookups
from core.rules import rank_order
from core.scores import score_expression, table_columns
from core.scoring import get_run
from core.store import Store, quote_ident

# A uniform sample of this many points draws the shape; more only slow the page (every point goes
# to the browser on each rerun).
SCATTER_MAX_POINTS = 10_000
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SUMMARY_COLUMNS = ["count", "mean", "std", "min", *[f"p{round(q * 100)}" for q in QUANTILES], "max"]
# The page's own columns; a metadata column with one of these names is shown as "meta:NAME".
_RESERVED = {"sample_id", "score", "probe", "text"}
_TEXT_CACHE_SIZE = 4


def _clean(expr: str) -> str:
    """The expression with NaN turned into NULL: NaN is "no score", like NULL."""
    return f"CASE WHEN isnan({expr}) THEN NULL ELSE {expr} END"


# ---- filters ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreRange:
    """Samples whose SCORE lies in [LOW, HIGH] ([LOW, HIGH) unless CLOSED); None = no bound."""

    score: str
    low: float | None = None
    high: float | None = None
    closed: bool = True  # a histogram bar is [left, right), its last bar [left, right]

    def describe(self) -> str:
        low = "" if self.low is None else f"{self.low:.4g} ≤ "
        high = "" if self.high is None else f" {'≤' if self.closed else '<'} {self.high:.4g}"
        return f"{low}{self.score}{high}"


@dataclass
class SampleFilter:
    """Which samples the ranked list and the charts show; every field is optional."""

    text: str | None = None  # substring (case-insensitive) or regular expression (RE2)
    regex: bool = False
    meta: dict[str, str] = field(default_factory=dict)  # column -> substring of its value (all)
    ranges: tuple[ScoreRange, ...] = ()  # all must hold
    group_by: GroupBy | None = None  # with GROUPS: only samples in these groups
    groups: tuple[str, ...] = ()
    hide_probe_training: bool = False  # hide the samples that trained the run's model

    def without_ranges(self, *scores: str) -> SampleFilter:
        """The same filter without its ranges on SCORES (a chart is not filtered by its own)."""
        return replace(self, ranges=tuple(r for r in self.ranges if r.score not in scores))

    @property
    def active(self) -> bool:
        return bool(
            self.text
            or any(self.meta.values())
            or self.ranges
            or (self.group_by and self.groups)
            or self.hide_probe_training
        )


@dataclass(frozen=True)
class RunFacts:
    """What Explore shows beside a run's scores."""

    meta_columns: list[str]  # the dataset's original columns other than its text, in order
    probes: dict[str, int]  # samples that trained ('train') or validated ('val') the run's model


def load_run_facts(store: Store, run_id: str) -> RunFacts:
    """RUN's RunFacts (one connection)."""
    with store.connect() as con:
        ctx = _run_context(con, store, run_id)
        probes = con.execute(
            "SELECT role, count(*) FROM probe_samples WHERE model_hash = ? AND fingerprint = ? "
            "GROUP BY role",
            [ctx.model_hash, ctx.fingerprint],
        ).fetchall()
    return RunFacts(ctx.meta_columns, dict(probes))


@dataclass
class _RunContext:
    store: Store
    run_id: str
    dataset: str
    model_hash: str | None
    fingerprint: str
    meta_table: str
    meta_columns: list[str]


def _run_context(con, store: Store, run_id: str) -> _RunContext:
    row = con.execute(
        "SELECT r.dataset, r.model_hash, r.fingerprint, d.meta_table, d.columns, d.text_column "
        "FROM runs r JOIN datasets d ON d.name = r.dataset WHERE r.run_id = ?",
        [run_id],
    ).fetchall()
    if not row:
        get_dataset(store, get_run(store, run_id)["dataset"])  # says what is missing
        raise InputError(f"run {run_id} has no dataset")
    dataset, model_hash, fingerprint, meta_table, columns, text_column = row[0]
    names = [c["name"] for c in json.loads(columns) if c["name"] != text_column]
    return _RunContext(store, run_id, dataset, model_hash, fingerprint, meta_table, names)


class _Rows:
    """One run's rows that pass a filter, as SQL on one connection: `sample_id` and one column per
    named value expression (`grouped` adds each row's group label)."""

    def __init__(self, con, ctx: _RunContext, filters: SampleFilter, values: dict[str, str]):
        self.con, self.ctx = con, ctx
        self.n_temporary = 0
        inner = ["sample_id", *(f"{e} AS {quote_ident(a)}" for a, e in values.items())]
        where, self.params = [], [ctx.run_id]
        for i, r in enumerate(filters.ranges):
            inner.append(f"{_clean(score_expression(r.score))} AS _r{i}")
            where.append(f"_r{i} IS NOT NULL")
            if r.low is not None:
                where.append(f"_r{i} >= ?")
                self.params.append(r.low)
            if r.high is not None:
                where.append(f"_r{i} {'<=' if r.closed else '<'} ?")
                self.params.append(r.high)
        meta, key = quote_ident(ctx.meta_table), quote_ident(META_KEY)
        for column, value in filters.meta.items():
            if column not in ctx.meta_columns:
                raise InputError(
                    f"unknown metadata column '{column}'; columns are: "
                    f"{', '.join(ctx.meta_columns)}"
                )
            if value:
                where.append(
                    f"sample_id IN (SELECT {key} FROM {meta} "
                    f"WHERE contains(lower(CAST({quote_ident(column)} AS VARCHAR)), lower(?)))"
                )
                self.params.append(value)
        if filters.text:
            con.register("_explore_text", _text_matches(con, ctx, filters.text, filters.regex))
            where.append("sample_id IN (SELECT sample_id FROM _explore_text)")
        if filters.group_by is not None and filters.groups:
            label = self.group_sql(filters.group_by, "m")
            where.append(
                f"sample_id IN (SELECT m.{key} FROM {meta} m WHERE list_contains(?, {label}))"
            )
            self.params.append(list(filters.groups))
        if filters.hide_probe_training:
            where.append(
                "sample_id NOT IN (SELECT sample_id FROM probe_samples "
                "WHERE model_hash = ? AND fingerprint = ? AND role = 'train')"
            )
            self.params += [ctx.model_hash, ctx.fingerprint]
        outer = ", ".join(["sample_id", *(quote_ident(a) for a in values)])
        self.sql = (
            f"SELECT {outer} FROM (SELECT {', '.join(inner)} FROM scores WHERE run_id = ?)"
            + (f" WHERE {' AND '.join(where)}" if where else "")
        )

    def group_sql(self, by: GroupBy, alias: str) -> str:
        """The group label of a row of the metadata table ALIAS."""
        if by.column not in self.ctx.meta_columns:
            raise InputError(
                f"unknown metadata column '{by.column}'; columns are: "
                f"{', '.join(self.ctx.meta_columns)}"
            )
        labels = load_groups(self.ctx.store, self.ctx.dataset, by).labels
        return group_case_sql(by, labels, f"{alias}.{quote_ident(by.column)}")

    def grouped(self, by: GroupBy | None, sql: str | None = None) -> str:
        """The rows (or those of SQL, which has `sample_id`) with their group label `g` (NULL
        without BY)."""
        sql = sql or self.sql
        if by is None:
            return f"SELECT *, NULL::VARCHAR AS g FROM ({sql})"
        meta, key = quote_ident(self.ctx.meta_table), quote_ident(META_KEY)
        return (
            f"SELECT f.*, {self.group_sql(by, 'm')} AS g FROM ({sql}) f "
            f"LEFT JOIN {meta} m ON m.{key} = f.sample_id"
        )

    def read_twice(self, sql: str, by: GroupBy | None) -> tuple[str, list]:
        """(FROM clause, its parameters) for a query SQL that two statements read: with a group
        join, SQL is run once into a temporary table; without, it is cheaper to run it twice."""
        if by is None:
            return f"({sql})", self.params
        self.n_temporary += 1
        name = f"_rows{self.n_temporary}"
        self.run(f"CREATE TEMP TABLE {name} AS {sql}")
        return name, []

    def run(self, sql: str, extra: list | None = None):
        """Execute SQL, which reads the rows once (then EXTRA's parameters)."""
        return self.con.execute(sql, [*self.params, *(extra or [])])


_text_cache: OrderedDict[tuple, pa.Table] = OrderedDict()
_text_guard = threading.Lock()


def _text_matches(con, ctx: _RunContext, text: str, regex: bool) -> pa.Table:
    """The ids of the dataset's samples whose text matches: one scan of the texts per search,
    kept for the next queries (every chart and the list ask again with other filters)."""
    key = (str(ctx.store.path), ctx.dataset, ctx.fingerprint, text, regex)
    with _text_guard:
        if key in _text_cache:
            _text_cache.move_to_end(key)
            return _text_cache[key]
    match = "regexp_matches(text, ?)" if regex else "contains(lower(text), lower(?))"
    try:
        ids = con.sql(
            f"SELECT sample_id FROM samples WHERE dataset = ? AND {match}",
            params=[ctx.dataset, text],
        ).to_arrow_table()
    except duckdb.InvalidInputException as exc:
        if regex:
            raise InputError(f"bad regular expression {text!r}: {first_line(exc)}") from exc
        raise
    with _text_guard:
        _text_cache[key] = ids
        while len(_text_cache) > _TEXT_CACHE_SIZE:
            _text_cache.popitem(last=False)
    return ids


# ---- aggregates ---------------------------------------------------------------------------------


def count_samples(store: Store, run_id: str, filters: SampleFilter | None = None) -> int:
    """How many of RUN's scored samples pass FILTERS."""
    with store.connect() as con:
        ctx = _run_context(con, store, run_id)
        rows = _Rows(con, ctx, filters or SampleFilter(), {})
        return rows.run(f"SELECT count(*) FROM ({rows.sql})").fetchall()[0][0]


def load_histogram(
    store: Store,
    run_id: str,
    score: str,
    bins: int = 60,
    log_x: bool = False,
    filters: SampleFilter | None = None,
    by: GroupBy | None = None,
    full_range: bool = False,
) -> Histogram:
    """Equal-width bins of SCORE over RUN (equal in log10 when LOG_X), counting the samples that
    pass FILTERS; with BY, the counts of each group too. A value is in bin i when edge[i] <= value
    < edge[i+1] (the last bin includes its right edge), exactly as a `ScoreRange` of that bar
    selects. The bins span the values that pass FILTERS, or with FULL_RANGE all of the run's (so
    that they stay put as the filters change)."""
    with store.connect() as con:
        ctx = _run_context(con, store, run_id)
        rows = _Rows(con, ctx, filters or SampleFilter(), {"v": _clean(score_expression(score))})
        t = "CASE WHEN v > 0 THEN log10(v) END" if log_x else "v"
        source, params = rows.read_twice(f"SELECT {t} AS t, v, g FROM ({rows.grouped(by)})", by)
        # The values at the ends as well as their logs: 10**log10(v) need not give v back, and a
        # click on an end bar must take the sample at the end.
        v_of_t = "CASE WHEN t IS NOT NULL THEN v END"
        ends = f"min(t), max(t), min({v_of_t}), max({v_of_t})"
        lo, hi, v_lo, v_hi, n, total = con.execute(
            f"SELECT {ends}, count(t), count(*) FROM {source}", params
        ).fetchall()[0]
        if not n:
            return Histogram(score, log_x, [], [], 0, total)
        if full_range and filters is not None and filters.active:
            every = _Rows(con, ctx, SampleFilter(), {"v": _clean(score_expression(score))})
            lo, hi, v_lo, v_hi = every.run(
                f"SELECT {ends} FROM (SELECT {t} AS t, v FROM ({every.sql}))"
            ).fetchall()[0]
        exact_ends = hi != lo
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        width = (hi - lo) / bins
        # The bin from the edges themselves (lo + i * width, as below), so a value on an edge
        # lands where a range filter of that bar finds it. Literals as text cast to DOUBLE: the
        # exact doubles of `edges` (a decimal literal is not).
        lo_, w_ = f"'{lo!r}'::DOUBLE", f"'{width!r}'::DOUBLE"
        b0 = f"least(greatest(floor((t - {lo_}) / {w_})::BIGINT, 0), {bins - 1})"
        b = (
            f"{b0} - (t < {lo_} + {b0} * {w_})::INT "
            f"+ ({b0} < {bins - 1} AND t >= {lo_} + ({b0} + 1) * {w_})::INT"
        )
        counts = con.execute(
            f"SELECT g, {b} AS b, count(*) FROM {source} WHERE t IS NOT NULL GROUP BY g, b",
            params,
        ).fetchall()
    edges = [lo + i * width for i in range(bins)] + [hi]
    if log_x:
        edges = [10**e for e in edges]
        if exact_ends:
            edges[0], edges[-1] = float(v_lo), float(v_hi)
    totals = [0] * bins
    by_group: dict[str, list[int]] = {}
    for g, i, c in counts:
        totals[i] += c
        if by is not None:
            by_group.setdefault(g, [0] * bins)[i] += c
    if by is not None:
        order = load_groups(store, ctx.dataset, by).labels
        by_group = {g: by_group[g] for g in order if g in by_group}
    return Histogram(score, log_x, edges, totals, n, total - n, by_group=by_group)


def load_summary(
    store: Store, run_id: str, scores: list[str], filters: SampleFilter | None = None
) -> pd.DataFrame:
    """count, mean, std, min, quantiles and max of each score over RUN's samples that pass
    FILTERS (one row per score)."""
    values = {f"c{i}": _clean(score_expression(s)) for i, s in enumerate(scores)}
    with store.connect() as con:
        ctx = _run_context(con, store, run_id)
        rows = _Rows(con, ctx, filters or SampleFilter(), values)
        row = rows.run(f"SELECT {', '.join(map(_aggregates, values))} FROM ({rows.sql})")
        row = row.fetchall()[0]
    return pd.DataFrame(
        [_summary_record(row[6 * i : 6 * i + 6]) for i in range(len(scores))],
        index=scores,
        columns=SUMMARY_COLUMNS,
    )


def load_group_summary(
    store: Store, run_id: str, score: str, by: GroupBy, filters: SampleFilter | None = None
) -> pd.DataFrame:
    """The summary of SCORE for each group of BY (one row per group, largest first) and for all
    samples that pass FILTERS (the last row, "all")."""
    with store.connect() as con:
        ctx = _run_context(con, store, run_id)
        rows = _Rows(con, ctx, filters or SampleFilter(), {"v": _clean(score_expression(score))})
        found = rows.run(
            f"SELECT g, {_aggregates('v')} FROM ({rows.grouped(by)}) GROUP BY ROLLUP (g)"
        ).fetchall()
    labels = load_groups(store, ctx.dataset, by).labels
    per_group = {r[0]: r[1:] for r in found if r[0] is not None}
    everything = next((r[1:] for r in found if r[0] is None), None)
    index = [g for g in labels if g in per_group]
    records = [_summary_record(per_group[g]) for g in index]
    if everything is not None and len(index) > 1:
        index.append("all")
        records.append(_summary_record(everything))
    frame = pd.DataFrame(records, index=pd.Index(index, name=by.label), columns=SUMMARY_COLUMNS)
    return frame


def _aggregates(c: str) -> str:
    c = quote_ident(c)
    return (
        f"count({c}), avg({c}), stddev_pop({c}), min({c}), "
        f"quantile_cont({c}, {list(QUANTILES)}), max({c})"
    )


def _summary_record(row) -> list:
    count, mean, std, lo, quantiles, hi = row
    return [count, mean, std, lo, *(quantiles or [None] * len(QUANTILES)), hi]


def load_scatter(
    store: Store,
    run_id: str,
    x: str,
    y: str,
    max_points: int = SCATTER_MAX_POINTS,
    filters: SampleFilter | None = None,
    by: GroupBy | None = None,
) -> tuple[pd.DataFrame, int]:
    """(sample_id, x, y[, group]) of up to MAX_POINTS samples with both scores that pass FILTERS
    (NaN counts as none; a uniform sample above that), and the total. Explore and Compare draw
    their scatters from it."""
    values = {"x": _clean(score_expression(x)), "y": _clean(score_expression(y))}
    with store.connect() as con:
        ctx = _run_context(con, store, run_id)
        rows = _Rows(con, ctx, filters or SampleFilter(), values)
        points = f"SELECT sample_id, x, y FROM ({rows.sql}) WHERE x IS NOT NULL AND y IS NOT NULL"
        n = rows.run(f"SELECT count(*) FROM ({points})").fetchall()[0][0]
        if n > max_points:
            # Sample the filtered rows: USING SAMPLE on the table would sample before the WHERE.
            points = (
                f"SELECT * FROM ({points}) "
                f"USING SAMPLE reservoir({int(max_points)} ROWS) REPEATABLE (0)"
            )
        if by is not None:  # the sampled points only meet the metadata
            points = f"SELECT sample_id, x, y, g AS group FROM ({rows.grouped(by, points)})"
        return rows.run(points).df(), n


# ---- samples ------------------------------------------------------------------------------------


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
    score_cols = table_columns()
    values = {"score": _clean(score_expression(score))} | {c: quote_ident(c) for c in score_cols}
    with store.connect() as con:
        ctx = _run_context(con, store, run_id)
        rows = _Rows(con, ctx, filters or SampleFilter(), values)
        matching = f"SELECT * FROM ({rows.sql}) WHERE score IS NOT NULL"
        total = rows.run(f"SELECT count(*) FROM ({matching})").fetchall()[0][0]
        page = rows.run(
            f"{matching} ORDER BY {rank_order('score', highest)} LIMIT ? OFFSET ?",
            [limit, offset],
        ).df()
        page = page.drop(columns=[c for c in score_cols if page[c].isna().all()])
        return _with_details(con, ctx, page), total


def _with_details(con, ctx: _RunContext, page: pd.DataFrame) -> pd.DataFrame:
    """PAGE with each sample's probe role, metadata and the start of its text."""
    meta, key = quote_ident(ctx.meta_table), quote_ident(META_KEY)
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
    return page


def load_sample(store: Store, run_id: str, sample_id: str) -> dict:
    """One sample of RUN in full: text, every stored score, metadata, probe role."""
    with store.connect() as con:
        ctx = _run_context(con, store, run_id)
        found = con.execute(
            "SELECT text, n_bytes FROM samples WHERE dataset = ? AND sample_id = ?",
            [ctx.dataset, sample_id],
        ).fetchall()
        if not found:
            raise InputError(f"sample '{sample_id}' is not in dataset '{ctx.dataset}'")
        scores = con.execute(
            "SELECT * EXCLUDE (run_id, sample_id) FROM scores WHERE run_id = ? AND sample_id = ?",
            [run_id, sample_id],
        ).df()
        meta = (  # a dataset of texts alone has no metadata column to select
            con.execute(
                f"SELECT {', '.join(map(quote_ident, ctx.meta_columns))} "
                f"FROM {quote_ident(ctx.meta_table)} WHERE {quote_ident(META_KEY)} = ?",
                [sample_id],
            ).df()
            if ctx.meta_columns
            else []
        )
        role = con.execute(
            "SELECT role FROM probe_samples WHERE model_hash = ? AND fingerprint = ? "
            "AND sample_id = ?",
            [ctx.model_hash, ctx.fingerprint, sample_id],
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
