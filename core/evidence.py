"""Evidence for a previewed rule: the finished validations of the same run, score and rule.

A validation backs a rule when it validated the same run, score, rule kind, stratify column and
dedup mode; it matches exactly at the same ratio(s), else the nearest validated ratios are shown
as the closest evidence there is. Effects come from core/effects.py (interval and verdict).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

import pandas as pd

from core.effects import HELDOUT, effects
from core.rules import Rule
from core.store import Store

RATIO_TOLERANCE = 1e-9


@dataclass
class Evidence:
    """The validations behind a rule: EXACT ones at its ratio, else the NEAREST ratios."""

    exact: pd.DataFrame  # effects rows (core.effects.EFFECT_COLUMNS + validation_id)
    nearest: pd.DataFrame
    running: list[str]  # validations of this very setting still running

    @property
    def best(self) -> dict | None:
        """The exact in-distribution effect, for a manifest: id, set, effect, interval, verdict."""
        if self.exact.empty:
            return None
        rows = self.exact[self.exact["group"].isna()]
        rows = rows.sort_values("eval_set", key=lambda s: s != HELDOUT)
        r = rows.iloc[0]
        return {
            "validation_id": r["validation_id"],
            "eval_set": r["eval_set"],
            "arm": r["arm"],
            "ratio": r["ratio"],
            "minus_random": r["minus_random"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "verdict": r["verdict"],
            "seeds": int(r["seeds"]),
        }


def rule_shares(rule: Rule) -> tuple[float, float] | None:
    """(low, high) pruned shares as a validation records them; None for a threshold rule."""
    if rule.by != "ratio":
        return None
    return (rule.low or 0.0, rule.high or 0.0)


def evidence_for(store: Store, run_id: str, score: str, rule: Rule) -> Evidence:
    """What the finished validations of RUN say about RULE ranked by SCORE."""
    shares = rule_shares(rule)
    arm = "dedup+pruned" if rule.dedup else "pruned"
    candidates = store.query(
        "SELECT validation_id, ratios, settings, status, finished_at FROM validations "
        "WHERE run_id = ? AND score = ? AND rule = ?",
        [run_id, score, rule.kind],
    )
    frames, running = [], []
    for vid, ratios, settings, status, finished_at in candidates:
        settings = json.loads(settings)
        if settings.get("stratify") != rule.stratify:
            continue
        if rule.dedup and settings.get("dedup") != rule.dedup:
            continue
        if rule.group_ratios:  # overrides are not validated: nothing matches exactly
            continue
        if status == "running" and shares is not None and _has_ratio(ratios, shares):
            running.append(vid)
        table = _effects(store, vid, status, finished_at)
        table = table[table["arm"] == arm]
        if not table.empty:
            frames.append(
                table.assign(validation_id=vid, low_high=[json.loads(ratios)] * len(table))
            )
    if not frames or shares is None:
        empty = pd.DataFrame()
        return Evidence(empty, _nearest(pd.concat(frames) if frames else empty, shares), running)
    every = pd.concat(frames, ignore_index=True)
    total = round(sum(shares), 10)
    exact = every[(every["ratio"] - total).abs() < RATIO_TOLERANCE]
    same = pd.Series([_same_split(r, shares) for r in exact.itertuples()], index=exact.index)
    exact = exact.loc[same.astype(bool)]
    return Evidence(exact.drop(columns="low_high"), _nearest(every, shares), running)


_finished: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
_finished_guard = threading.Lock()
_CACHE_SIZE = 64


def _effects(store: Store, vid: str, status: str, finished_at) -> pd.DataFrame:
    """A validation's effects per group; those of a finished one are computed once per process
    (its bootstrap is hundreds of milliseconds, and the Prune page asks on every slider step)."""
    if status != "done":
        return effects(store, vid, by_group=True)
    key = (str(store.path), vid, str(finished_at))
    with _finished_guard:
        if key in _finished:
            _finished.move_to_end(key)
            return _finished[key]
    table = effects(store, vid, by_group=True)
    with _finished_guard:
        _finished[key] = table
        while len(_finished) > _CACHE_SIZE:
            _finished.popitem(last=False)
    return table


def _has_ratio(ratios_json: str, shares: tuple[float, float]) -> bool:
    return any(
        abs(r["low"] - shares[0]) < RATIO_TOLERANCE and abs(r["high"] - shares[1]) < RATIO_TOLERANCE
        for r in json.loads(ratios_json)
    )


def _same_split(row, shares: tuple[float, float]) -> bool:
    """A keep-middle validation at the same total but another low/high split is not a match."""
    return any(
        abs(r["ratio"] - row.ratio) < RATIO_TOLERANCE
        and abs(r["low"] - shares[0]) < RATIO_TOLERANCE
        and abs(r["high"] - shares[1]) < RATIO_TOLERANCE
        for r in row.low_high
    )


def _nearest(every: pd.DataFrame, shares) -> pd.DataFrame:
    """The overall effects at the validated ratios nearest the rule's (below and above)."""
    if every.empty or shares is None:
        return pd.DataFrame()
    overall = every[every["group"].isna()].drop(columns="low_high")
    total = sum(shares)
    distance = (overall["ratio"] - total).abs().round(9)
    return overall[distance == distance.min()].reset_index(drop=True)
