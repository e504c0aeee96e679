"""Every measure infoprune computes; adding a measure is one module and one line here."""

from __future__ import annotations

from core.measures.base import Measure

MEASURES: list[Measure] = []


def all_measures() -> list[Measure]:
    return list(MEASURES)
