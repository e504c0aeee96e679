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
- Unscored samples (no row in the run, or a null/NaN score) are never ranked and never pruned:
  they are always kept and reported separately as "unscored".

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


@dataclass(frozen=True)
class Rule:
    """A pruning rule: `low`/`high` are ratios in [0, 1] (by="ratio") or score thresholds."""

    kind: str
    low: float | None = None
    high: float | None = None
    by: str = "ratio"

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

    def to_dict(self) -> dict:
        return {"kind": self.kind, "by": self.by, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict) -> Rule:
        if not isinstance(d, dict) or "kind" not in d:
            raise InputError(f"a rule is an object with a 'kind', not {d!r}")
        return cls(d["kind"], d.get("low"), d.get("high"), d.get("by", "ratio"))

    def describe(self) -> str:
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
) -> Rule:
    """The Rule that CLI-style flags describe (--ratio for one tail, --ratio-low/-high for two)."""
    if kind not in RULES:
        raise InputError(f"unknown rule '{kind}'; rules are: {', '.join(RULES)}")
    by_ratio = (ratio, ratio_low, ratio_high)
    by_threshold = (threshold, threshold_low, threshold_high)
    if any(v is not None for v in by_ratio) and any(v is not None for v in by_threshold):
        raise InputError("give ratios or thresholds, not both")
    by = "threshold" if any(v is not None for v in by_threshold) else "ratio"
    single, low, high = by_threshold if by == "threshold" else by_ratio
    flag = f"--{by}"
    if kind == "keep-middle":
        if single is not None:
            raise InputError(f"keep-middle takes {flag}-low and {flag}-high, not {flag}")
        return Rule(kind, low, high, by)
    if low is not None or high is not None:
        raise InputError(f"{kind} takes {flag}, not {flag}-low/{flag}-high")
    if single is None:
        raise InputError(f"rule {kind} needs --ratio R (a fraction between 0 and 1)")
    return Rule(kind, single, None, by) if kind == "prune-low" else Rule(kind, None, single, by)


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
