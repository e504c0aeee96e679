"""Groups of a dataset's samples by one metadata column, and what a rule prunes of each group.

Semantics (the contract):
- A sample's group is its value of the column as text (DuckDB's CAST to VARCHAR: booleans read
  `true`/`false`). A null value is its own group, MISSING. A URL column grouped by domain takes
  the host name of each value (lower-cased, without a leading "www."); a value with no host is
  MISSING.
- The GROUP_TOP groups with the most samples (ties by label) are shown by name, the rest are
  OTHER. A real value spelled like OTHER or MISSING shares that group.
- `load_groups` (numpy, per row) and `group_case_sql` (SQL, per value) group exactly alike.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.datasets import get_dataset
from core.errors import InputError
from core.ingest import META_KEY
from core.prune import CURVE_RATIOS, Ranking, RuleInputs, Selection, curve_rules, select
from core.rules import Rule
from core.store import Store, quote_ident

GROUP_TOP = 20  # groups shown by name; the rest are "other"
OTHER = "other"
MISSING = "(none)"  # a null value is its own group
MAX_GROUP_VALUES = 1000  # a column with more distinct values is not offered as a group-by
URL_SHARE = 0.5  # a text column is offered by domain when this share of its values are URLs
_CACHE_SIZE = 8

# Host of a URL: after the scheme and any user info, up to the port, path, query or fragment.
_HOST_PATTERN = r"^\s*[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?([^/?#:]+)"
_URL_PATTERN = r"^\s*[A-Za-z][A-Za-z0-9+.\-]*://[^/?#:@]"
_GROUPABLE_TYPES = ("VARCHAR", "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")
_GROUPABLE_TYPES += tuple("U" + t for t in _GROUPABLE_TYPES[2:])


@dataclass(frozen=True)
class GroupBy:
    """Which column groups the samples, and whether a URL column is grouped by its domain."""

    column: str
    domain: bool = False

    @classmethod
    def parse(cls, text: str) -> GroupBy:
        """'source' or 'url:domain' (how the CLI and the session state spell a GroupBy)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("a group-by is a metadata column name, or COLUMN:domain for URLs")
        column, sep, mode = text.strip().rpartition(":")
        if sep and mode == "domain" and column:
            return cls(column, True)
        return cls(text.strip())

    def __str__(self) -> str:
        return f"{self.column}:domain" if self.domain else self.column

    @property
    def label(self) -> str:
        return f"{self.column} (domain)" if self.domain else self.column


def value_sql(by: GroupBy, column_sql: str) -> str:
    """The SQL text value a sample is grouped by (NULL for MISSING), from the raw COLUMN_SQL."""
    text = f"CAST({column_sql} AS VARCHAR)"
    if not by.domain:
        return text
    host = f"lower(regexp_extract({text}, '{_HOST_PATTERN}', 1))"
    return f"nullif(regexp_replace({host}, '^www\\.', ''), '')"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def group_case_sql(by: GroupBy, labels: list[str], value_sql_: str) -> str:
    """A SQL expression mapping a raw value (VALUE_SQL_, e.g. m."source") to its group label."""
    value = value_sql(by, value_sql_)
    whens = f"WHEN {value} IN ({', '.join(map(_literal, labels))}) THEN {value} " if labels else ""
    return f"CASE {whens}WHEN {value} IS NULL THEN {_literal(MISSING)} ELSE {_literal(OTHER)} END"


@dataclass
class Groups:
    """Every sample of a dataset with its group: labels, and one code per samples.row_idx."""

    by: GroupBy
    labels: list[str]  # top GROUP_TOP by samples (ties by label), then OTHER, then MISSING
    codes: np.ndarray  # int32 per row_idx; -1 where the dataset stores no sample
    key: tuple = ()  # (store, dataset, fingerprint, meta table, by): what the codes were read from

    @property
    def sizes(self) -> np.ndarray:
        """Samples per label."""
        stored = self.codes[self.codes >= 0]
        return np.bincount(stored, minlength=len(self.labels))

    def label_of_rows(self, row_idx: np.ndarray) -> np.ndarray:
        """The group label of each row (None for a row the dataset does not store)."""
        names = np.array([*self.labels, None], dtype=object)
        codes = self.codes[np.asarray(row_idx, dtype=np.int64)]
        return names[np.where(codes < 0, len(self.labels), codes)]


# ---- what can group a dataset ------------------------------------------------------------------


_options: OrderedDict[tuple, list[GroupBy]] = OrderedDict()
_groups: OrderedDict[tuple, Groups] = OrderedDict()
_guard = threading.Lock()


def _remember(cache: OrderedDict, key: tuple, value):
    with _guard:
        cache[key] = value
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    return value


def _recall(cache: OrderedDict, key: tuple):
    with _guard:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    return None


def _meta_columns(con, meta_table: str) -> dict[str, str]:
    """The metadata table's columns and DuckDB types, without the sample key."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position",
        [meta_table],
    ).fetchall()
    return {name: typ for name, typ in rows if name != META_KEY}


def group_options(store: Store, dataset: str) -> list[GroupBy]:
    """Metadata columns worth grouping DATASET by: text/bool/integer columns with few distinct
    values (at most MAX_GROUP_VALUES, and fewer than half the samples), then URL columns by domain.
    """
    info = get_dataset(store, dataset)
    key = (str(store.path), dataset, info.fingerprint, info.meta_table)
    cached = _recall(_options, key)
    if cached is not None:
        return list(cached)
    with store.connect() as con:
        columns = _meta_columns(con, info.meta_table)
        candidates = [
            c for c, t in columns.items() if t in _GROUPABLE_TYPES and c != info.id_column
        ]
        options: list[GroupBy] = []
        if candidates:
            parts = ["count(*)"]
            for c in candidates:
                q = quote_ident(c)
                parts.append(f"approx_count_distinct({q})")
                urls = (
                    f"count_if(regexp_matches(CAST({q} AS VARCHAR), '{_URL_PATTERN}'))"
                    if columns[c] == "VARCHAR"
                    else "0"
                )
                parts += [urls, f"count({q})"]
            row = con.execute(
                f"SELECT {', '.join(parts)} FROM {quote_ident(info.meta_table)}"
            ).fetchall()[0]
            n_rows = row[0]
            by_domain = []
            for i, c in enumerate(candidates):
                distinct, urls, present = row[1 + 3 * i : 4 + 3 * i]
                if 0 < distinct <= min(MAX_GROUP_VALUES, max(n_rows // 2, 2)):
                    options.append(GroupBy(c))
                if present and urls >= URL_SHARE * present:
                    by_domain.append(GroupBy(c, True))
            options += by_domain
    return list(_remember(_options, key, options))


# ---- groups of one dataset ---------------------------------------------------------------------


def load_groups(store: Store, dataset: str, by: GroupBy, top: int | None = GROUP_TOP) -> Groups:
    """Each stored sample's group under BY (cached per store, dataset content and BY): the TOP
    largest by name and the rest OTHER, or with TOP None every value its own group (what a
    stratified rule ranks within)."""
    info = get_dataset(store, dataset)
    # The fingerprint covers ids and texts; a new ingest of the same texts gets a new meta table.
    key = (str(store.path), dataset, info.fingerprint, info.meta_table, str(by), top)
    cached = _recall(_groups, key)
    if cached is not None:
        return cached
    meta = quote_ident(info.meta_table)
    joined = (
        f"FROM samples s LEFT JOIN {meta} m ON m.{quote_ident(META_KEY)} = s.sample_id "
        "WHERE s.dataset = ?"
    )
    with store.connect() as con:
        columns = _meta_columns(con, info.meta_table)
        if by.column not in columns:
            raise InputError(
                f"unknown metadata column '{by.column}' in dataset '{dataset}'; its columns are: "
                f"{', '.join(columns) or 'none'}"
            )
        if by.domain and columns[by.column] != "VARCHAR":
            raise InputError(
                f"column '{by.column}' holds {columns[by.column]}, not URLs — group by "
                f"'{by.column}' without ':domain'"
            )
        column_sql = f"m.{quote_ident(by.column)}"
        # The metadata table holds one row per stored sample: count there, without the join.
        counts = con.execute(
            f"SELECT {value_sql(by, column_sql)} AS g, count(*) FROM {meta} m GROUP BY g"
        ).fetchall()
        labels = _labels(counts, top)
        codes_sql = _code_case_sql(by, labels, column_sql)
        rows = con.execute(
            f"SELECT s.row_idx, {codes_sql} AS code {joined}", [dataset]
        ).fetchnumpy()
    row_idx = np.asarray(rows["row_idx"], dtype=np.int64)
    codes = np.full(int(row_idx.max()) + 1 if len(row_idx) else 0, -1, dtype=np.int32)
    codes[row_idx] = np.asarray(rows["code"], dtype=np.int32)
    return _remember(_groups, key, Groups(by, labels, codes, key))


def _labels(counts: list[tuple[str | None, int]], top: int | None = GROUP_TOP) -> list[str]:
    """Top TOP values by count (ties by label), then OTHER if any are left, then MISSING."""
    values = sorted(((g, n) for g, n in counts if g is not None), key=lambda t: (-t[1], t[0]))
    labels = [g for g, _ in values[:top]]
    if top is not None and len(values) > top and OTHER not in labels:
        labels.append(OTHER)
    if any(g is None for g, _ in counts) and MISSING not in labels:
        labels.append(MISSING)
    return labels


def _code_case_sql(by: GroupBy, labels: list[str], column_sql: str) -> str:
    """The index in LABELS of each value's group (group_case_sql, as an integer)."""
    label = group_case_sql(by, labels, column_sql)
    whens = " ".join(f"WHEN {_literal(x)} THEN {i}" for i, x in enumerate(labels))
    return f"CASE {label} {whens} END"


def with_groups(frame: pd.DataFrame, ranking: Ranking, groups: Groups) -> pd.DataFrame:
    """FRAME (ranked samples with their 1-based `rank`) with each one's group after its id."""
    rows = ranking.row_idx[frame["rank"].to_numpy(dtype=np.int64) - 1]
    out = frame.copy()
    out.insert(
        list(out.columns).index("sample_id") + 1, groups.by.label, groups.label_of_rows(rows)
    )
    return out


# ---- what a rule prunes of each group ----------------------------------------------------------


@dataclass
class _RankedGroups:
    """One ranking regrouped so that any cut is one binary search per group: the rank positions
    grouped by code (ascending within a group, as keys code·(N+1) + position) and cumulative
    tokens and bytes along them; per group, totals that count unscored samples too."""

    ranking: Ranking
    starts: np.ndarray  # len G + 1: where each group begins in `keys`
    keys: np.ndarray  # code * (N + 1) + rank position, ascending
    cum_tokens: np.ndarray  # len N + 1, along `keys`
    cum_bytes: np.ndarray
    samples: np.ndarray  # per group, scored and unscored
    tokens: np.ndarray
    bytes: np.ndarray
    unscored: np.ndarray


_ranked: OrderedDict[tuple, _RankedGroups] = OrderedDict()


def _ranked_groups(ranking: Ranking, groups: Groups) -> _RankedGroups:
    key = (id(ranking), groups.key or id(groups))
    cached = _recall(_ranked, key)
    if cached is not None and cached.ranking is ranking:  # it holds RANKING: the id is not reused
        return cached
    n_groups, n = len(groups.labels), ranking.n
    codes = groups.codes[ranking.row_idx].astype(np.int64)
    unscored_codes = groups.codes[ranking.unscored_row_idx]
    if (codes < 0).any() or (unscored_codes < 0).any():
        raise InputError("the groups were read from other samples than the ranking's — reload")
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=n_groups))])
    cum_tokens = np.concatenate([[0], np.cumsum(np.diff(ranking.cum_tokens)[order])])
    cum_bytes = np.concatenate([[0], np.cumsum(np.diff(ranking.cum_bytes)[order])])

    def per_group(cum: np.ndarray, unscored_each: np.ndarray) -> np.ndarray:
        unscored = np.bincount(unscored_codes, weights=unscored_each, minlength=n_groups)
        return (cum[starts[1:]] - cum[starts[:-1]] + unscored).astype(np.int64)

    unscored = np.bincount(unscored_codes, minlength=n_groups)
    ranked = _RankedGroups(
        ranking=ranking,
        starts=starts,
        keys=codes[order] * (n + 1) + order,
        cum_tokens=cum_tokens,
        cum_bytes=cum_bytes,
        samples=np.diff(starts) + unscored,
        tokens=per_group(cum_tokens, ranking.unscored_n_tokens),
        bytes=per_group(cum_bytes, ranking.unscored_n_bytes),
        unscored=unscored,
    )
    return _remember(_ranked, key, ranked)


def group_pruned(ranked: _RankedGroups, k_low: int, k_high: int) -> dict[str, np.ndarray]:
    """Per group: samples, tokens and bytes pruned by cutting K_LOW and K_HIGH ranked samples."""
    n = ranked.ranking.n
    base = np.arange(len(ranked.starts) - 1, dtype=np.int64) * (n + 1)
    starts, ends = ranked.starts[:-1], ranked.starts[1:]
    low_end = np.searchsorted(ranked.keys, base + k_low)  # a group's positions below k_low
    high_start = np.searchsorted(ranked.keys, base + n - k_high)

    def pruned(cum: np.ndarray) -> np.ndarray:
        return (cum[low_end] - cum[starts] + cum[ends] - cum[high_start]).astype(np.int64)

    return {
        "samples": (low_end - starts + ends - high_start).astype(np.int64),
        "tokens": pruned(ranked.cum_tokens),
        "bytes": pruned(ranked.cum_bytes),
    }


GROUP_TABLE_COLUMNS = [
    "group",
    "samples",
    "kept",
    "pruned",
    "pruned_share",
    "tokens",
    "kept_tokens",
    "pruned_token_share",
    "bytes",
    "kept_bytes",
    "pruned_byte_share",
    "unscored",
]


def group_table(ranking: Ranking, selection: Selection, groups: Groups) -> pd.DataFrame:
    """Per group, what SELECTION keeps and prunes of it; the groups losing most share first.

    Unscored samples count in `samples` and `kept` (they are never pruned). The token columns are
    NA when the run has no token counts.
    """
    ranked = _ranked_groups(ranking, groups)
    pruned = _selection_pruned(ranked, groups, selection)
    table = pd.DataFrame(
        {
            "group": groups.labels,
            "samples": ranked.samples,
            "kept": ranked.samples - pruned["samples"],
            "pruned": pruned["samples"],
            "pruned_share": _share(pruned["samples"], ranked.samples),
            "tokens": ranked.tokens,
            "kept_tokens": ranked.tokens - pruned["tokens"],
            "pruned_token_share": _share(pruned["tokens"], ranked.tokens),
            "bytes": ranked.bytes,
            "kept_bytes": ranked.bytes - pruned["bytes"],
            "pruned_byte_share": _share(pruned["bytes"], ranked.bytes),
            "unscored": ranked.unscored,
        }
    )
    if not ranking.has_tokens:
        table[["tokens", "kept_tokens", "pruned_token_share"]] = pd.NA
    order = np.lexsort((np.arange(len(table)), -table["pruned_share"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def _selection_pruned(
    ranked: _RankedGroups, groups: Groups, selection: Selection
) -> dict[str, np.ndarray]:
    """group_pruned for any selection: two cuts by binary search, masks (a stratified or
    deduplicating rule) by counting the pruned samples of each group."""
    if selection.low is None:
        return group_pruned(ranked, selection.k_low, selection.k_high)
    ranking = ranked.ranking
    n_groups = len(groups.labels)
    mask = selection.pruned_mask()
    codes = groups.codes[ranking.row_idx[mask]]
    tokens = np.diff(ranking.cum_tokens)[mask]
    nbytes = np.diff(ranking.cum_bytes)[mask]
    if selection.unscored_duplicate is not None and selection.unscored_duplicate.any():
        extra = selection.unscored_duplicate
        codes = np.concatenate([codes, groups.codes[ranking.unscored_row_idx[extra]]])
        tokens = np.concatenate([tokens, ranking.unscored_n_tokens[extra]])
        nbytes = np.concatenate([nbytes, ranking.unscored_n_bytes[extra]])

    def count(weights=None) -> np.ndarray:
        return np.bincount(codes, weights=weights, minlength=n_groups).astype(np.int64)

    return {"samples": count(), "tokens": count(tokens), "bytes": count(nbytes)}


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return np.where(whole > 0, part / np.maximum(whole, 1), 0.0)


def group_kept_curve(
    ranking: Ranking,
    rule: Rule,
    groups: Groups,
    ratios=CURVE_RATIOS,
    inputs: RuleInputs | None = None,
) -> pd.DataFrame:
    """kept_curve per group: each group's kept share of tokens and bytes as the same rule prunes
    other shares of the scored samples (long form: one row per group and point)."""
    ranked = _ranked_groups(ranking, groups)
    frames = []
    for r, other, current in curve_rules(ranking, rule, ratios, inputs):
        s = select(ranking, other, inputs)
        pruned = _selection_pruned(ranked, groups, s)
        tokens_kept = 1 - _share(pruned["tokens"], ranked.tokens) if ranking.has_tokens else None
        frames.append(
            pd.DataFrame(
                {
                    "group": groups.labels,
                    "pruned_ratio": r,
                    "kept_tokens_share": tokens_kept,
                    "kept_bytes_share": 1 - _share(pruned["bytes"], ranked.bytes),
                    "current": current,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ---- the same numbers for the CLI and the manifest ---------------------------------------------

RECORD_COLUMNS = [
    "group",
    "samples",
    "kept",
    "pruned",
    "tokens",
    "kept_tokens",
    "bytes",
    "kept_bytes",
]


def load_group_table(
    store: Store, ranking: Ranking, selection: Selection, by: GroupBy
) -> pd.DataFrame:
    """group_table of SELECTION over RANKING (with the cached groups of its dataset)."""
    return group_table(ranking, selection, load_groups(store, ranking.dataset, by))


def group_record(table: pd.DataFrame, by: GroupBy) -> dict:
    """A manifest's `selection.groups`: the per-group counts (tokens null without token counts)."""
    counts = RECORD_COLUMNS[1:]
    rows = [
        {"group": row["group"], **{c: None if pd.isna(row[c]) else int(row[c]) for c in counts}}
        for row in table[RECORD_COLUMNS].to_dict("records")
    ]
    return {"by": str(by), "rows": rows}


def format_group_table(table: pd.DataFrame, by: GroupBy) -> str:
    """The per-group table as aligned text, shares as percentages (what the CLI prints); the
    token columns are left out when the run has no token counts."""
    if table["tokens"].isna().all():
        table = table.drop(columns=["tokens", "kept_tokens", "pruned_token_share"])
    shown = pd.DataFrame({by.label: table["group"].str.ljust(table["group"].str.len().max())})
    for column in table.columns[1:]:
        if column.endswith("share"):
            shown[column] = [f"{v:.1%}" for v in table[column]]
        else:
            shown[column] = [f"{int(v):,}" for v in table[column]]
    return shown.to_string(index=False)
