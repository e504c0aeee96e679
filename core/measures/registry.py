"""Every measure infoprune computes; adding a measure is one module and one line here."""

from __future__ import annotations

import re

from core.errors import InputError
from core.measures.base import Measure
from core.store import SCORE_COLUMNS

MEASURES: list[Measure] = []

# Columns of `scores` that rank samples (n_bytes and n_tokens are lengths, not information).
MODEL_SCORES = ["bits_per_token", "bits_total", "bits_per_byte"]


def all_measures() -> list[Measure]:
    return list(MEASURES)


def score_names() -> list[str]:
    """Every stored per-sample score a rule can rank by."""
    return MODEL_SCORES + [m.name for m in MEASURES] + ["n_tokens", "n_bytes"]


def score_expression(name: str) -> str:
    """The SQL expression over `scores` columns for a score NAME (validated: never user SQL)."""
    if name in score_names() or name in SCORE_COLUMNS:
        return name
    if re.fullmatch(r"[a-z_]+", name or ""):
        raise InputError(f"unknown score '{name}'; scores are: {', '.join(score_names())}")
    raise InputError(f"unknown score {name!r}; scores are: {', '.join(score_names())}")
