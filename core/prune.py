"""Rankings and previews: a run's samples ranked by a score, cached, and what a rule selects.

The semantics of the rules themselves are core/rules.py's contract. The ranking of one
(run, score) is computed once in DuckDB and cached in the process as sorted numpy arrays with
cumulative tokens and bytes, so a preview is a few O(1) lookups.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.datasets import get_dataset
from core.errors import InputError
from core.histogram import Histogram, ranking_histogram
from core.rules import (
    Cut,
    Rule,
    cuts,
    kept_positions,
    modified_cuts,
    prune_counts,
    pruned_positions,
    rank_order,
)
from core.scores import score_columns, score_expression
from core.scoring import get_run
from core.store import Store

PREVIEW_TEXT_CHARS = 300
_CACHE_SIZE = 4


# ---- the cached ranking of one (run, score) ---------------------------------------------------


@dataclass
class Ranking:
    """One run's dataset ranked by one score, as sorted arrays (scored samples only)."""

    run_id: str
    score: str
    dataset: str
    scores: np.ndarray  # ascending
    row_idx: np.ndarray  # samples.row_idx of each ranked sample
    cum_tokens: np.ndarray  # len N + 1; a sample without n_tokens counts 0
    cum_bytes: np.ndarray  # len N + 1
    unscored_row_idx: np.ndarray
    unscored_n_tokens: np.ndarray  # of each unscored sample, in unscored_row_idx's order
    unscored_n_bytes: np.ndarray
    has_tokens: bool = field(default=True)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def n_unscored(self) -> int:
        return len(self.unscored_row_idx)

    @property
    def unscored_tokens(self) -> int:
        return int(self.unscored_n_tokens.sum())

    @property
    def unscored_bytes(self) -> int:
        return int(self.unscored_n_bytes.sum())

    @property
    def total_tokens(self) -> int:
        return int(self.cum_tokens[-1]) + self.unscored_tokens

    @property
    def total_bytes(self) -> int:
        return int(self.cum_bytes[-1]) + self.unscored_bytes

    def pruned_totals(self, k_low: int, k_high: int) -> tuple[int, int]:
        """(tokens, bytes) of the pruned samples, from the cumulative sums."""
        n = self.n
        tokens = self.cum_tokens[k_low] + self.cum_tokens[n] - self.cum_tokens[n - k_high]
        nbytes = self.cum_bytes[k_low] + self.cum_bytes[n] - self.cum_bytes[n - k_high]
        return int(tokens), int(nbytes)


_rankings: OrderedDict[tuple, Ranking] = OrderedDict()
_rankings_guard = threading.Lock()


def check_run_current(store: Store, run_id: str) -> dict:
    """The run, if it is finished and its dataset is still the one it scored; else InputError."""
    run = get_run(store, run_id)
    if run["status"] != "done":
        raise InputError(
            f"run {run_id} is not finished (status: {run['status']}) — wait for it or resume it "
            "with `infoprune score`"
        )
    info = get_dataset(store, run["dataset"])
    if info.fingerprint != run["fingerprint"]:
        raise InputError(
            f"dataset '{run['dataset']}' changed since run {run_id} scored it — score it again"
        )
    return run


def check_score(store: Store, run_id: str, score: str) -> str:
    """SCORE's SQL expression, if RUN holds values for every column it needs."""
    from core.scoring import run_score_columns

    expression = score_expression(score)
    present = set(run_score_columns(store, run_id))
    missing = [c for c in score_columns(score) if c not in present]
    if missing:
        raise InputError(
            f"run {run_id} has no values for {', '.join(missing)}; its scores are: "
            f"{', '.join(sorted(present)) or 'none'}"
        )
    return expression


def load_ranking(store: Store, run_id: str, score: str) -> Ranking:
    """The ranking of RUN by SCORE, from the process cache when the run is unchanged."""
    with store.connect() as con:
        cached = _cached_ranking(con, store, run_id, score)
    if cached is not None:
        return cached
    run = check_run_current(store, run_id)
    ranking = _compute_ranking(store, run, score)
    with _rankings_guard:
        _rankings[_cache_key(store, run_id, score, run["finished_at"], run["fingerprint"])] = (
            ranking
        )
        while len(_rankings) > _CACHE_SIZE:
            _rankings.popitem(last=False)
    return ranking


def _cache_key(store: Store, run_id: str, score: str, finished_at, fingerprint: str) -> tuple:
    return (str(store.path), run_id, score, str(pd.Timestamp(finished_at)), fingerprint)


def _cached_ranking(con, store: Store, run_id: str, score: str) -> Ranking | None:
    """The cached ranking if the run is still finished and its dataset unchanged (one query)."""
    state = con.execute(
        "SELECT r.status, r.finished_at, r.fingerprint, d.fingerprint FROM runs r "
        "LEFT JOIN datasets d ON d.name = r.dataset WHERE r.run_id = ?",
        [run_id],
    ).fetchall()
    if not state or state[0][0] != "done" or state[0][2] != state[0][3]:
        return None  # load_ranking's full check says what is wrong
    key = _cache_key(store, run_id, score, state[0][1], state[0][2])
    with _rankings_guard:
        if key in _rankings:
            _rankings.move_to_end(key)
            return _rankings[key]
    return None


def _compute_ranking(store: Store, run: dict, score: str) -> Ranking:
    expression = check_score(store, run["run_id"], score)
    # The score is evaluated over exactly this run's rows (window-based scores need that).
    sql = (
        f"WITH sc AS (SELECT sample_id, {expression} AS score, n_tokens FROM scores "
        "WHERE run_id = ?), "
        "j AS (SELECT x.row_idx, x.sample_id, x.n_bytes, sc.n_tokens, "
        "CASE WHEN isnan(sc.score) THEN NULL ELSE sc.score END AS score "
        "FROM samples x LEFT JOIN sc ON sc.sample_id = x.sample_id WHERE x.dataset = ?) "
        f"SELECT row_idx, score, n_tokens, n_bytes FROM j ORDER BY score IS NULL, "
        f"{rank_order('score')}"
    )
    with store.connect() as con:
        cols = con.execute(sql, [run["run_id"], run["dataset"]]).fetchnumpy()
    score_col = cols["score"]
    mask = np.ma.getmaskarray(score_col)
    n = int((~mask).sum())  # unscored rows sort last
    tokens_col = cols["n_tokens"]
    tokens = np.ma.filled(tokens_col, 0).astype(np.int64)
    nbytes = np.asarray(cols["n_bytes"], dtype=np.int64)
    row_idx = np.asarray(cols["row_idx"], dtype=np.int64)
    return Ranking(
        run_id=run["run_id"],
        score=score,
        dataset=run["dataset"],
        # As floats before filling: an integer score (a length, a count) cannot hold NaN.
        scores=np.ma.filled(score_col[:n].astype(np.float64), np.nan),
        row_idx=row_idx[:n],
        cum_tokens=np.concatenate([[0], np.cumsum(tokens[:n])]),
        cum_bytes=np.concatenate([[0], np.cumsum(nbytes[:n])]),
        unscored_row_idx=row_idx[n:],
        unscored_n_tokens=tokens[n:],
        unscored_n_bytes=nbytes[n:],
        has_tokens=bool((~np.ma.getmaskarray(tokens_col)).any()),
    )


# ---- what a stratified or deduplicating rule reads ---------------------------------------------

_inputs: OrderedDict[tuple, RuleInputs] = OrderedDict()


def load_rule_inputs(store: Store, ranking: Ranking, rule: Rule) -> RuleInputs | None:
    """RULE's groups (stratify) and duplicates (dedup) aligned with RANKING; None for a plain
    rule. Cached with the ranking they align with."""
    if rule.is_plain:
        return None
    key = (id(ranking), rule.stratify, rule.dedup)
    with _rankings_guard:
        cached = _inputs.get(key)
    if cached is not None and cached[0] is ranking:  # it holds RANKING: the id is not reused
        return cached[1]
    inputs = RuleInputs()
    if rule.stratify:
        from core.groups import GroupBy, load_groups  # core.groups builds on this module

        groups = load_groups(store, ranking.dataset, GroupBy.parse(rule.stratify), top=None)
        inputs.strata = groups.codes[ranking.row_idx]
        inputs.labels = groups.labels
    if rule.dedup:
        rows = duplicate_rows(store, ranking.run_id, ranking.dataset, rule.dedup)
        size = int(max(ranking.row_idx.max(initial=-1), ranking.unscored_row_idx.max(initial=-1)))
        flag = np.zeros(size + 1, dtype=bool)
        flag[rows[rows <= size]] = True
        inputs.duplicate = flag[ranking.row_idx]
        inputs.unscored_duplicate = flag[ranking.unscored_row_idx]
    with _rankings_guard:
        _inputs[key] = (ranking, inputs)
        while len(_inputs) > _CACHE_SIZE:
            _inputs.popitem(last=False)
    return inputs


def duplicate_rows(store: Store, run_id: str, dataset: str, mode: str) -> np.ndarray:
    """samples.row_idx of every duplicate `dedup MODE` prunes: all members of each cluster but
    the one with the smallest sample_id in text order (core/rules.py's contract)."""
    from core.duplicates import ensure_duplicates  # the run's clusters, computed if missing

    ensure_duplicates(store, run_id)
    cluster = {"exact": "exact_cluster_id", "near": "cluster_id"}[mode]
    with store.connect() as con:
        rows = con.execute(
            f"SELECT s.row_idx FROM dup_clusters d JOIN samples s "
            f"ON s.dataset = ? AND s.sample_id = d.sample_id "
            f"WHERE d.run_id = ? AND d.{cluster} IS NOT NULL "
            f"QUALIFY row_number() OVER (PARTITION BY d.{cluster} ORDER BY d.sample_id) > 1",
            [dataset, run_id],
        ).fetchnumpy()
    return np.sort(np.asarray(rows["row_idx"], dtype=np.int64))


def rule_selection(store: Store, run_id: str, score: str, rule: Rule) -> tuple[Ranking, Selection]:
    """RUN ranked by SCORE and what RULE selects of it, with whatever the rule reads."""
    ranking = load_ranking(store, run_id, score)
    return ranking, select(ranking, rule, load_rule_inputs(store, ranking, rule))


# ---- previews ---------------------------------------------------------------------------------


@dataclass
class RuleInputs:
    """What a stratified or deduplicating rule reads beyond the ranking, aligned with it."""

    strata: np.ndarray | None = None  # group code per ranked position (stratify)
    labels: list[str] | None = None  # the groups' labels, by code
    duplicate: np.ndarray | None = None  # per ranked position: a duplicate dedup prunes
    unscored_duplicate: np.ndarray | None = None  # the same per unscored sample


@dataclass
class Selection:
    """What a rule does to one ranking: counts, shares and where the cuts fall.

    A plain rule prunes the K_LOW first and K_HIGH last ranked samples; a stratified or
    deduplicating one carries masks over the ranked positions (and the unscored samples).
    """

    rule: Rule
    n_scored: int
    n_unscored: int
    k_low: int
    k_high: int
    cuts: dict[str, Cut]
    kept_tokens: int
    total_tokens: int
    kept_bytes: int
    total_bytes: int
    has_tokens: bool
    low: np.ndarray | None = None  # bool per ranked position: pruned by the low tail
    high: np.ndarray | None = None
    duplicate: np.ndarray | None = None  # bool per ranked position: pruned as a duplicate
    unscored_duplicate: np.ndarray | None = None  # bool per unscored sample

    @property
    def n_duplicates(self) -> int:
        """Samples pruned as duplicates (scored or not), before the ratio rule."""
        return sum(int(m.sum()) for m in (self.duplicate, self.unscored_duplicate) if m is not None)

    @property
    def n_pruned(self) -> int:
        return self.k_low + self.k_high + self.n_duplicates

    def pruned_mask(self) -> np.ndarray:
        """Bool per ranked position: pruned (by either tail or as a duplicate)."""
        if self.low is None:
            mask = np.zeros(self.n_scored, dtype=bool)
            mask[pruned_positions(self.n_scored, self.k_low, self.k_high)] = True
            return mask
        mask = self.low | self.high
        return mask | self.duplicate if self.duplicate is not None else mask

    @property
    def n_kept(self) -> int:
        return self.n_scored + self.n_unscored - self.n_pruned

    @property
    def n_total(self) -> int:
        return self.n_scored + self.n_unscored

    @property
    def kept_share(self) -> float:
        return self.n_kept / self.n_total if self.n_total else 1.0

    @property
    def kept_tokens_share(self) -> float | None:
        if not self.has_tokens or not self.total_tokens:
            return None
        return self.kept_tokens / self.total_tokens

    @property
    def kept_bytes_share(self) -> float:
        return self.kept_bytes / self.total_bytes if self.total_bytes else 1.0

    @property
    def n_ranked(self) -> int:
        """Scored samples the ratio rule ranks: those dedup left."""
        return self.n_scored - (int(self.duplicate.sum()) if self.duplicate is not None else 0)

    @property
    def ratio_low(self) -> float:
        """The share of ranked samples pruned from the low end (what a threshold amounts to)."""
        return self.k_low / self.n_ranked if self.n_ranked else 0.0

    @property
    def ratio_high(self) -> float:
        return self.k_high / self.n_ranked if self.n_ranked else 0.0

    def to_dict(self) -> dict:
        return {
            "n_scored": self.n_scored,
            "n_unscored_kept": self.n_unscored,
            "n_pruned_low": self.k_low,
            "n_pruned_high": self.k_high,
            "n_pruned_duplicates": self.n_duplicates,
            "n_kept": self.n_kept,
            "n_pruned": self.n_pruned,
            "effective_ratio_low": self.ratio_low,
            "effective_ratio_high": self.ratio_high,
            "thresholds": {
                side: {"last_pruned": c.last_pruned, "first_kept": c.first_kept}
                for side, c in self.cuts.items()
            },
            "kept_tokens": self.kept_tokens if self.has_tokens else None,
            "total_tokens": self.total_tokens if self.has_tokens else None,
            "kept_bytes": self.kept_bytes,
            "total_bytes": self.total_bytes,
        }


def select(ranking: Ranking, rule: Rule, inputs: RuleInputs | None = None) -> Selection:
    """Apply RULE to a ranking (pure arithmetic over the cached arrays); a stratified or
    deduplicating rule also needs its INPUTS (`load_rule_inputs`)."""
    if not rule.is_plain:
        return _select_modified(ranking, rule, inputs)
    k_low, k_high = prune_counts(ranking.scores, rule)
    pruned_tokens, pruned_bytes = ranking.pruned_totals(k_low, k_high)
    return _selection(
        ranking,
        rule,
        k_low,
        k_high,
        cuts(ranking.scores, k_low, k_high, rule),
        pruned_tokens,
        pruned_bytes,
    )


def _selection(
    ranking: Ranking, rule: Rule, k_low, k_high, cuts_, pruned_tokens, pruned_bytes, **masks
) -> Selection:
    """A Selection of RANKING from what a rule prunes (MASKS: a modified rule's masks)."""
    return Selection(
        rule=rule,
        n_scored=ranking.n,
        n_unscored=ranking.n_unscored,
        k_low=k_low,
        k_high=k_high,
        cuts=cuts_,
        kept_tokens=ranking.total_tokens - pruned_tokens,
        total_tokens=ranking.total_tokens,
        kept_bytes=ranking.total_bytes - pruned_bytes,
        total_bytes=ranking.total_bytes,
        has_tokens=ranking.has_tokens,
        **masks,
    )


def _select_modified(ranking: Ranking, rule: Rule, inputs: RuleInputs | None) -> Selection:
    if inputs is None or (rule.stratify and inputs.strata is None):
        raise InputError(f"rule '{rule.describe()}' needs its groups or duplicates: load them")
    if rule.dedup and inputs.duplicate is None:
        raise InputError(f"rule '{rule.describe()}' needs the run's duplicates: load them")
    if rule.stratify:
        unknown = {g.group for g in rule.group_ratios} - set(inputs.labels)
        if unknown:
            shown = ", ".join(sorted(inputs.labels)[:20])
            raise InputError(
                f"no group {', '.join(map(repr, sorted(unknown)))} in {rule.stratify}; "
                f"its groups are: {shown}"
            )
    duplicate = inputs.duplicate if rule.dedup else None
    unscored_duplicate = inputs.unscored_duplicate if rule.dedup else None
    low, high = modified_cuts(
        ranking.scores,
        rule,
        inputs.strata if rule.stratify else None,
        inputs.labels,
        duplicate,
    )
    pruned = low | high if duplicate is None else low | high | duplicate
    tokens_each = np.diff(ranking.cum_tokens)
    bytes_each = np.diff(ranking.cum_bytes)
    pruned_tokens = int(tokens_each[pruned].sum())
    pruned_bytes = int(bytes_each[pruned].sum())
    if unscored_duplicate is not None:
        pruned_tokens += int(ranking.unscored_n_tokens[unscored_duplicate].sum())
        pruned_bytes += int(ranking.unscored_n_bytes[unscored_duplicate].sum())
    return _selection(
        ranking,
        rule,
        int(low.sum()),
        int(high.sum()),
        _masked_cuts(ranking.scores, rule, low, high, pruned),
        pruned_tokens,
        pruned_bytes,
        low=low,
        high=high,
        duplicate=duplicate,
        unscored_duplicate=unscored_duplicate,
    )


def _masked_cuts(scores: np.ndarray, rule: Rule, low, high, pruned) -> dict[str, Cut]:
    """Per tail: the most extreme score it pruned and the nearest kept score beyond it (with
    strata the cuts differ per group; these bound them all)."""
    kept = scores[~pruned]
    out = {}
    if rule.kind in ("prune-low", "keep-middle"):
        out["low"] = Cut(
            int(low.sum()),
            float(scores[low].max()) if low.any() else None,
            float(kept.min()) if len(kept) else None,
        )
    if rule.kind in ("prune-high", "keep-middle"):
        out["high"] = Cut(
            int(high.sum()),
            float(scores[high].min()) if high.any() else None,
            float(kept.max()) if len(kept) else None,
        )
    return out


def selected_row_idx(ranking: Ranking, selection: Selection, part: str) -> np.ndarray:
    """samples.row_idx of the kept part (with every unscored sample) or the pruned part."""
    if selection.low is not None:
        pruned = selection.pruned_mask()
        unscored = selection.unscored_duplicate
        if unscored is None:
            unscored = np.zeros(ranking.n_unscored, dtype=bool)
        if part == "pruned":
            return np.concatenate([ranking.row_idx[pruned], ranking.unscored_row_idx[unscored]])
        if part == "kept":
            return np.concatenate([ranking.row_idx[~pruned], ranking.unscored_row_idx[~unscored]])
        raise InputError(f"unknown part '{part}' — use kept or pruned")
    if part == "pruned":
        return ranking.row_idx[pruned_positions(ranking.n, selection.k_low, selection.k_high)]
    if part == "kept":
        kept = ranking.row_idx[kept_positions(ranking.n, selection.k_low, selection.k_high)]
        return np.concatenate([kept, ranking.unscored_row_idx])
    raise InputError(f"unknown part '{part}' — use kept or pruned")


@dataclass
class PrunePreview:
    selection: Selection
    borderline: pd.DataFrame  # tail, side, rank, score, n_tokens, n_bytes, sample_id, text
    random_pruned: pd.DataFrame  # rank, score, n_tokens, n_bytes, sample_id, text
    curve: pd.DataFrame  # pruned_ratio, kept_tokens_share, kept_bytes_share, current
    histogram: Histogram  # of the ranked scores, for the threshold lines
    ranking: Ranking  # what it was computed from (cached), for per-group views
    inputs: RuleInputs | None = None  # the rule's groups and duplicates, for per-group views


def prune_preview(
    store: Store,
    run_id: str,
    score: str,
    rule: Rule,
    n_borderline: int = 3,
    n_random: int = 5,
    seed: int = 0,
) -> PrunePreview:
    """Everything the Prune page shows for one slider position, from the cached ranking.

    With the ranking cached this opens the store once, for two small queries.
    """
    with store.connect() as con:
        ranking = _cached_ranking(con, store, run_id, score)
        if ranking is not None and rule.is_plain:
            return _preview(con, ranking, rule, None, n_borderline, n_random, seed)
    if ranking is None:
        ranking = load_ranking(store, run_id, score)
    inputs = load_rule_inputs(store, ranking, rule)
    with store.connect() as con:
        return _preview(con, ranking, rule, inputs, n_borderline, n_random, seed)


def _preview(
    con,
    ranking: Ranking,
    rule: Rule,
    inputs: RuleInputs | None,
    n_borderline: int,
    n_random: int,
    seed: int,
):
    selection = select(ranking, rule, inputs)
    if selection.low is None:
        border, pruned_at = _plain_border(selection, ranking.n, n_borderline)
    else:
        border, pruned_at = _masked_border(selection, n_borderline)
    border.sort(key=lambda t: t[2])
    rng = np.random.default_rng(seed)
    n_pruned = selection.n_pruned - (
        int(selection.unscored_duplicate.sum()) if selection.unscored_duplicate is not None else 0
    )
    picks = np.sort(rng.choice(n_pruned, size=min(n_random, n_pruned), replace=False))
    random_positions = [pruned_at(int(i)) for i in picks]
    positions = [p for _, _, p in border] + random_positions
    details = _sample_details(con, ranking, positions)
    borderline = pd.DataFrame(
        [{"tail": t, "side": s, **details[p]} for t, s, p in border],
        columns=["tail", "side", *_DETAIL_COLUMNS],
    )
    random_pruned = pd.DataFrame([details[p] for p in random_positions], columns=_DETAIL_COLUMNS)
    return PrunePreview(
        selection,
        borderline,
        random_pruned,
        kept_curve(ranking, rule, inputs=inputs),
        ranking_histogram(ranking),
        ranking,
        inputs,
    )


def _plain_border(selection: Selection, n: int, n_borderline: int):
    """(tail, side, position) of the samples either side of each cut, and the position of the
    i-th pruned sample (in rank order)."""
    border: list[tuple[str, str, int]] = []
    for tail, cut in selection.cuts.items():
        if tail == "low":
            pruned = range(max(cut.k - n_borderline, 0), cut.k)
            kept = range(cut.k, min(cut.k + n_borderline, n - selection.k_high))
        else:
            kept = range(max(n - cut.k - n_borderline, selection.k_low), n - cut.k)
            pruned = range(n - cut.k, min(n - cut.k + n_borderline, n))
        border += [(tail, "pruned", p) for p in pruned] + [(tail, "kept", p) for p in kept]

    def pruned_at(i: int) -> int:
        return i if i < selection.k_low else n - selection.k_high + i - selection.k_low

    return border, pruned_at


def _masked_border(selection: Selection, n_borderline: int):
    """_plain_border for a stratified or deduplicating rule: per tail, the pruned samples
    nearest the kept ones and the kept samples nearest the tail."""
    kept = np.flatnonzero(~selection.pruned_mask())
    border: list[tuple[str, str, int]] = []
    if "low" in selection.cuts:
        pruned = np.flatnonzero(selection.low)[-n_borderline:]
        border += [("low", "pruned", int(p)) for p in pruned]
        border += [("low", "kept", int(p)) for p in kept[:n_borderline]]
    if "high" in selection.cuts:
        first = max(len(kept) - n_borderline, n_borderline if "low" in selection.cuts else 0)
        border += [("high", "kept", int(p)) for p in kept[first:]]
        border += [
            ("high", "pruned", int(p)) for p in np.flatnonzero(selection.high)[:n_borderline]
        ]
    every_pruned = np.flatnonzero(selection.pruned_mask())
    return border, lambda i: int(every_pruned[i])


_DETAIL_COLUMNS = ["rank", "score", "n_tokens", "n_bytes", "sample_id", "text"]


def point_lookups(query: str, n: int) -> str:
    """N copies of QUERY (which selects by `column = ?`) joined by UNION ALL.

    DuckDB pushes an equality into the table scan and reads the other columns of the matching
    rows only; an IN list becomes a join that reads every row's text (far slower at 1M rows).
    """
    return " UNION ALL ".join([query] * n)


def _sample_details(con, ranking: Ranking, positions: list[int]) -> dict[int, dict]:
    """Rank, score, sizes, id and text preview of the ranked samples at POSITIONS (one query)."""
    if not positions:
        return {}
    rows = sorted({int(ranking.row_idx[p]) for p in positions})
    found = con.execute(
        point_lookups(
            "SELECT row_idx, sample_id, left(text, ?) FROM samples "
            "WHERE dataset = ? AND row_idx = ?",
            len(rows),
        ),
        [x for r in rows for x in (PREVIEW_TEXT_CHARS, ranking.dataset, r)],
    ).fetchall()
    by_row = {r[0]: r[1:] for r in found}
    out = {}
    for p in positions:
        sample_id, text = by_row[int(ranking.row_idx[p])]
        out[p] = {
            "rank": p + 1,
            "score": float(ranking.scores[p]),
            "n_tokens": int(ranking.cum_tokens[p + 1] - ranking.cum_tokens[p])
            if ranking.has_tokens
            else None,
            "n_bytes": int(ranking.cum_bytes[p + 1] - ranking.cum_bytes[p]),
            "sample_id": sample_id,
            "text": text,
        }
    return out


CURVE_RATIOS = tuple(round(0.05 * i, 2) for i in range(21))


def kept_curve(
    ranking: Ranking, rule: Rule, ratios=CURVE_RATIOS, inputs: RuleInputs | None = None
) -> pd.DataFrame:
    """Kept share of tokens and bytes if the same rule pruned other shares of samples."""
    rows = []
    for r, other, current in curve_rules(ranking, rule, ratios, inputs):
        s = select(ranking, other, inputs)
        rows.append(
            {
                "pruned_ratio": r,
                "kept_tokens_share": s.kept_tokens_share,
                "kept_bytes_share": s.kept_bytes_share,
                "current": current,
            }
        )
    return pd.DataFrame(rows)


def curve_rules(
    ranking: Ranking, rule: Rule, ratios=CURVE_RATIOS, inputs: RuleInputs | None = None
) -> list[tuple[float, Rule, bool]]:
    """(share pruned, RULE's kind pruning that share, whether it is RULE's own share) per point.

    keep-middle keeps the current split between its two tails (an even split when both are 0).
    A stratified or deduplicating rule keeps its stratify, group overrides and dedup at every
    point, and its share is its own ratio(s).
    """
    if rule.stratify:  # the rule's ratios, not what they amount to once groups round them
        low_share, high_share = rule.low or 0.0, rule.high or 0.0
    else:
        selection = select(ranking, rule, inputs)
        low_share, high_share = selection.ratio_low, selection.ratio_high
    total = low_share + high_share
    low_part = low_share / total if total else 0.5
    out = []
    for r in sorted({*ratios, round(total, 4)}):
        if rule.kind == "prune-low":
            low, high = r, None
        elif rule.kind == "prune-high":
            low, high = None, r
        else:
            low = round(r * low_part, 6)
            high = max(round(r - low, 6), 0.0)
        other = dataclasses.replace(rule, low=low, high=high, by="ratio")
        out.append((r, other, math.isclose(r, round(total, 4))))
    return out
