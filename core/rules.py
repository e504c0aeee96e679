"""Pruning rules: the exact selection semantics shared by the UI, the CLI and exports.

Semantics (the contract):
- The samples of a run's dataset are ranked by (score, sample_id) ascending; `rank_order` orders
  equal scores by id: ids that read as integers numerically, then the rest as text. A scored
  sample's rank is its position 1..N, where N counts *scored* samples only.
- `prune-low r` prunes ranks 1..k with k = floor(r·N + 0.5); `prune-high r` prunes the last k;
  `keep-middle a b` prunes floor(a·N + 0.5) from the low end and floor(b·N + 0.5) from the high end
  (the high tail never takes more than the low tail left). Ratios are read as the decimals they
  print as (0.35 is 35/100, not the nearest binary float), so 0.35 of 10 rounds to 4.
- A threshold rule prunes every score strictly below the low threshold and strictly above the high
  one; it becomes the same k's and then behaves exactly like a ratio rule.
- Unscored samples (no row in the run, or a null/NaN score) are never ranked and never pruned
  by a ratio or threshold: they are always kept and reported separately as "unscored".
- `stratify COLUMN` (ratio rules only): the ratio(s) apply within each group g of a metadata
  column (its values as core/groups.py reads them: text, a URL's domain with `COLUMN:domain`;
  every value its own group, null values one group of their own): with N_g scored samples in g,
  prune floor(r·N_g + 0.5) of g's lowest (and/or highest) ranked, by the same (score, sample_id)
  order. A group ratio override `(group, low, high)` replaces the rule's ratios for that group
  only (ratio 0 keeps the whole group).
- `dedup exact|near` comes first: in every duplicate cluster of the run (the `dup_clusters`
  table: byte-identical texts for `exact`, connected near-duplicate pairs for `near`) the sample
  with the smallest sample_id in text order is kept and every other member is pruned as a
  duplicate, scored or not. The ratio rule (stratified or not) then applies to the scored samples
  that remain: N (or N_g) counts only those. A threshold rule prunes the remaining samples past it.
  `dedup` with ratio 0 is plain deduplication.

This module is the pure arithmetic (no store): core/prune.py ranks a run and applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from core.errors import InputError
from core.rule_names import RULES


def rank_order(score_sql: str, descending: bool = False, id_sql: str = "sample_id") -> str:
    """The ORDER BY clause of every ranking in infoprune (or its exact reverse).

    Equal scores are ordered by sample id (a VARCHAR): ids that read as integers first, in numeric
    order (2 before 10), then the others as text. `TRY_CAST(id AS BIGINT) NULLS LAST, id`.
    """
    if descending:
        return f"{score_sql} DESC, TRY_CAST({id_sql} AS BIGINT) DESC NULLS FIRST, {id_sql} DESC"
    return f"{score_sql}, TRY_CAST({id_sql} AS BIGINT) NULLS LAST, {id_sql}"


DEDUP_MODES = (None, "exact", "near")
DEDUP_WORDS = {"exact": "exact-duplicate group", "near": "near-duplicate cluster"}


@dataclass(frozen=True)
class GroupRatio:
    """A stratified rule's ratio(s) for one group, in place of the rule's own."""

    group: str
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Rule:
    """A pruning rule: `low`/`high` are ratios in [0, 1] (by="ratio") or score thresholds."""

    kind: str
    low: float | None = None
    high: float | None = None
    by: str = "ratio"
    stratify: str | None = None  # a group-by ('source', 'url:domain'): ratios apply per value
    group_ratios: tuple[GroupRatio, ...] = ()  # per-group overrides of low/high (with stratify)
    dedup: str | None = None  # 'exact' | 'near': one sample per duplicate cluster, first

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in RULES:
            raise InputError(f"unknown rule '{self.kind}'; rules are: {', '.join(RULES)}")
        if self.by not in ("ratio", "threshold"):
            raise InputError(f"a rule is set by 'ratio' or 'threshold', not '{self.by}'")
        needs = {"prune-low": ("low",), "prune-high": ("high",), "keep-middle": ("low", "high")}
        for side in ("low", "high"):
            value = getattr(self, side)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise InputError(f"the {side} {self.by} must be a number, not {value!r}")
            if side in needs[self.kind] and value is None:
                flag = "--ratio" if self.kind != "keep-middle" else f"--{self.by}-{side}"
                raise InputError(f"rule {self.kind} needs a {self.by} — pass {flag}")
            if side not in needs[self.kind] and value is not None:
                raise InputError(f"rule {self.kind} takes no {side} {self.by}")
            if value is not None and not math.isfinite(value):
                raise InputError(f"the {side} {self.by} must be a finite number")
        if self.by == "ratio":
            for value in (self.low, self.high):
                if value is not None and not 0 <= value <= 1:
                    raise InputError(f"ratios must be between 0 and 1, got {value}")
            if (self.low or 0) + (self.high or 0) > 1:
                raise InputError(
                    f"low ratio {self.low} + high ratio {self.high} is more than 1 "
                    "— together they would prune more than every sample"
                )
        elif self.kind == "keep-middle" and self.low > self.high:
            raise InputError(
                f"low threshold {self.low} is above high threshold {self.high} — nothing would "
                "be kept; swap them"
            )
        self._check_modifiers()

    def _check_modifiers(self) -> None:
        if self.dedup not in DEDUP_MODES:
            modes = ", ".join(m for m in DEDUP_MODES if m)
            raise InputError(f"dedup is one of {modes}, not {self.dedup!r}")
        if self.stratify is not None:
            if not isinstance(self.stratify, str) or not self.stratify.strip():
                raise InputError("stratify by a metadata column name (COLUMN:domain for URLs)")
            if self.by != "ratio":
                raise InputError(
                    "stratify applies ratios within each group; a threshold is the same in "
                    "every group — use ratios, or drop the stratify column"
                )
        if self.group_ratios and self.stratify is None:
            raise InputError("group ratios need a stratify column: the groups are its values")
        seen = set()
        for override in self.group_ratios:
            if not isinstance(override, GroupRatio):
                raise InputError(f"a group ratio is (group, low, high), not {override!r}")
            if override.group in seen:
                raise InputError(f"group '{override.group}' has two ratio overrides; keep one")
            seen.add(override.group)
            try:  # the same checks as the rule's own
                Rule(self.kind, override.low, override.high)
            except InputError as exc:
                raise InputError(f"group '{override.group}': {exc}") from None

    def ratios_of(self, group: str) -> tuple[float | None, float | None]:
        """(low, high) ratios that apply to GROUP: its override, else the rule's."""
        for override in self.group_ratios:
            if override.group == group:
                return override.low, override.high
        return self.low, self.high

    @property
    def is_plain(self) -> bool:
        """A rule without stratify or dedup: two contiguous cuts of one ranking."""
        return self.stratify is None and self.dedup is None

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "by": self.by,
            "low": self.low,
            "high": self.high,
            "stratify": self.stratify,
            "group_ratios": [
                {"group": g.group, "low": g.low, "high": g.high} for g in self.group_ratios
            ],
            "dedup": self.dedup,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Rule:
        if not isinstance(d, dict) or "kind" not in d:
            raise InputError(f"a rule is an object with a 'kind', not {d!r}")
        overrides = d.get("group_ratios") or []
        if not isinstance(overrides, list) or not all(
            isinstance(g, dict) and isinstance(g.get("group"), str) for g in overrides
        ):
            raise InputError("a rule's group_ratios is a list of {group, low, high} objects")
        return cls(
            d["kind"],
            d.get("low"),
            d.get("high"),
            d.get("by", "ratio"),
            stratify=d.get("stratify"),
            group_ratios=tuple(
                GroupRatio(g["group"], g.get("low"), g.get("high")) for g in overrides
            ),
            dedup=d.get("dedup"),
        )

    def describe(self) -> str:
        """The rule in words, with its stratify, overrides and dedup."""
        text = self._describe_cut()
        if self.stratify:
            text += f" within each {self.stratify}"
        for g in self.group_ratios:
            ratios = "/".join(f"{v:.2%}" for v in (g.low, g.high) if v is not None)
            text += f"; {ratios} of '{g.group}'"
        if self.dedup:
            text = f"keep one of each {DEDUP_WORDS[self.dedup]}, then {text}"
        return text

    def _describe_cut(self) -> str:
        def fmt(v):
            return f"{v:.2%}" if self.by == "ratio" else f"{v:g}"

        if self.kind == "prune-low":
            return (
                f"prune the lowest {fmt(self.low)}"
                if self.by == "ratio"
                else (f"prune scores below {fmt(self.low)}")
            )
        if self.kind == "prune-high":
            return (
                f"prune the highest {fmt(self.high)}"
                if self.by == "ratio"
                else (f"prune scores above {fmt(self.high)}")
            )
        if self.by == "ratio":
            return f"keep the middle: prune the lowest {fmt(self.low)} and highest {fmt(self.high)}"
        return f"keep scores from {fmt(self.low)} to {fmt(self.high)}"


def rule_from_args(
    kind: str,
    ratio: float | None = None,
    ratio_low: float | None = None,
    ratio_high: float | None = None,
    threshold: float | None = None,
    threshold_low: float | None = None,
    threshold_high: float | None = None,
    stratify: str | None = None,
    group_ratios: list[str] | tuple[str, ...] = (),
    dedup: str | None = None,
) -> Rule:
    """The Rule that CLI-style flags describe (--ratio for one tail, --ratio-low/-high for two;
    --stratify, --group-ratio GROUP=R or GROUP=LOW:HIGH, --dedup)."""
    if kind not in RULES:
        raise InputError(f"unknown rule '{kind}'; rules are: {', '.join(RULES)}")
    by_ratio = (ratio, ratio_low, ratio_high)
    by_threshold = (threshold, threshold_low, threshold_high)
    if any(v is not None for v in by_ratio) and any(v is not None for v in by_threshold):
        raise InputError("give ratios or thresholds, not both")
    by = "threshold" if any(v is not None for v in by_threshold) else "ratio"
    single, low, high = by_threshold if by == "threshold" else by_ratio
    flag = f"--{by}"
    modifiers = {
        "stratify": stratify or None,
        "group_ratios": tuple(parse_group_ratio(kind, text) for text in group_ratios),
        "dedup": dedup or None,
    }
    if kind == "keep-middle":
        if single is not None:
            raise InputError(f"keep-middle takes {flag}-low and {flag}-high, not {flag}")
        return Rule(kind, low, high, by, **modifiers)
    if low is not None or high is not None:
        raise InputError(f"{kind} takes {flag}, not {flag}-low/{flag}-high")
    if single is None:
        raise InputError(f"rule {kind} needs --ratio R (a fraction between 0 and 1)")
    if kind == "prune-low":
        return Rule(kind, single, None, by, **modifiers)
    return Rule(kind, None, single, by, **modifiers)


def parse_group_ratio(kind: str, text: str) -> GroupRatio:
    """'GROUP=R' (prune-low, prune-high) or 'GROUP=LOW:HIGH' (keep-middle) as a GroupRatio."""
    group, sep, value = str(text).rpartition("=")
    shape, example = (
        ("GROUP=LOW:HIGH", "python-docs=0:0")
        if kind == "keep-middle"
        else ("GROUP=R", "python-docs=0")
    )
    field = "“Other ratios for some groups”"  # the Prune & Export page's field for --group-ratio
    try:
        if not sep or not group:
            raise ValueError
        numbers = [float(v) for v in value.split(":")]
    except ValueError:
        raise InputError(
            f"--group-ratio '{text}' is not {shape} (e.g. {example})",
            ui=f"'{text}' in {field} is not {shape} (e.g. {example}); separate groups by commas.",
        ) from None
    if len(numbers) != (2 if kind == "keep-middle" else 1):
        raise InputError(
            f"--group-ratio for {kind} is {shape}, not '{text}'",
            ui=f"{field} takes {shape} for {kind} (e.g. {example}), not '{text}'.",
        )
    if kind == "keep-middle":
        return GroupRatio(group, numbers[0], numbers[1])
    if kind == "prune-low":
        return GroupRatio(group, numbers[0], None)
    return GroupRatio(group, None, numbers[0])


def count_for_ratio(ratio: float, n: int) -> int:
    """floor(ratio·n + 0.5), with RATIO taken as the decimal it prints as (exact arithmetic)."""
    return math.floor(Fraction(str(ratio)) * n + Fraction(1, 2))


def prune_counts(sorted_scores: np.ndarray, rule: Rule) -> tuple[int, int]:
    """(k_low, k_high): how many ranked samples RULE prunes from each end of SORTED_SCORES."""
    n = len(sorted_scores)
    if rule.by == "ratio":
        k_low = count_for_ratio(rule.low, n) if rule.low is not None else 0
        k_high = count_for_ratio(rule.high, n) if rule.high is not None else 0
    else:
        k_low = (
            int(np.searchsorted(sorted_scores, rule.low, side="left"))
            if rule.low is not None
            else 0
        )
        k_high = (
            n - int(np.searchsorted(sorted_scores, rule.high, side="right"))
            if rule.high is not None
            else 0
        )
    return k_low, min(k_high, n - k_low)


@dataclass(frozen=True)
class Cut:
    """Where one tail's cut falls: the last pruned score and the first kept score beside it."""

    k: int
    last_pruned: float | None
    first_kept: float | None

    @property
    def line(self) -> float | None:
        """A score between the two, for a threshold line on a histogram."""
        values = [v for v in (self.last_pruned, self.first_kept) if v is not None]
        return sum(values) / len(values) if values else None


def cuts(sorted_scores: np.ndarray, k_low: int, k_high: int, rule: Rule) -> dict[str, Cut]:
    """The cut of each tail RULE prunes ('low' and/or 'high')."""
    n = len(sorted_scores)

    def value(i: int) -> float | None:
        return float(sorted_scores[i]) if 0 <= i < n else None

    out = {}
    if rule.kind in ("prune-low", "keep-middle"):
        out["low"] = Cut(k_low, value(k_low - 1), value(k_low))
    if rule.kind in ("prune-high", "keep-middle"):
        out["high"] = Cut(k_high, value(n - k_high), value(n - k_high - 1))
    return out


def pruned_positions(n: int, k_low: int, k_high: int) -> np.ndarray:
    """Rank positions (0-based) pruned: the first k_low and the last k_high."""
    return np.concatenate([np.arange(k_low), np.arange(n - k_high, n)]).astype(np.int64)


def kept_positions(n: int, k_low: int, k_high: int) -> np.ndarray:
    return np.arange(k_low, n - k_high, dtype=np.int64)


def modified_cuts(
    sorted_scores: np.ndarray,
    rule: Rule,
    strata: np.ndarray | None = None,
    labels: list[str] | None = None,
    duplicate: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): which ranked positions RULE prunes from each tail, as boolean masks, after
    the positions DUPLICATE marks are set aside and, with STRATA (a group code per position into
    LABELS), within each group. The contract's stratify and dedup, vectorised: O(N)."""
    n = len(sorted_scores)
    in_play = np.flatnonzero(~duplicate) if duplicate is not None else np.arange(n)
    if strata is None:
        codes = np.zeros(len(in_play), dtype=np.int64)
        ratios = [(rule.low, rule.high)]
    else:
        codes = np.asarray(strata, dtype=np.int64)[in_play]
        ratios = [rule.ratios_of(label) for label in labels]
    sizes = np.bincount(codes, minlength=len(ratios))
    k_low = np.zeros(len(ratios), dtype=np.int64)
    k_high = np.zeros(len(ratios), dtype=np.int64)
    if rule.by == "threshold":  # one group; stratify needs ratios
        k_low[0], k_high[0] = prune_counts(sorted_scores[in_play], rule)
    else:
        for g, ((low, high), size) in enumerate(zip(ratios, sizes, strict=True)):
            k_low[g] = count_for_ratio(low, int(size)) if low is not None else 0
            k_high[g] = min(
                count_for_ratio(high, int(size)) if high is not None else 0, int(size) - k_low[g]
            )
    # Each position's place within its group, in rank order: a stable sort by group code.
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])[:-1]
    within = np.empty(len(codes), dtype=np.int64)
    within[order] = np.arange(len(codes)) - starts[codes[order]]
    low = np.zeros(n, dtype=bool)
    high = np.zeros(n, dtype=bool)
    low[in_play[within < k_low[codes]]] = True
    high[in_play[within >= sizes[codes] - k_high[codes]]] = True
    return low, high
