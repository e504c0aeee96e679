"""Every measure infoprune computes; adding a measure is one module and one line here."""

from __future__ import annotations

import re

from core.errors import InputError
from core.measures.base import Measure
from core.measures.combined import Combined
from core.measures.gzip_ratio import GzipBitsPerByte
from core.measures.word_entropy import WordEntropy

_WORD_ENTROPY = WordEntropy()
MEASURES: list[Measure] = [_WORD_ENTROPY, GzipBitsPerByte(), Combined(_WORD_ENTROPY)]

# Columns of `scores` that rank samples (n_bytes and n_tokens are lengths, not information).
MODEL_SCORES = ["bits_per_token", "bits_total", "bits_per_byte"]
LENGTHS = ["n_tokens", "n_bytes"]

# weighted:ALPHA = ALPHA·z(bits_per_token) + (1−ALPHA)·z(word_entropy), ALPHA in [0, 1].
WEIGHTED_PREFIX = "weighted:"
WEIGHTED_PARTS = ("bits_per_token", "word_entropy")
_WEIGHTED = re.compile(r"weighted:(0(\.\d{1,4})?|1(\.0{1,4})?)")


def all_measures() -> list[Measure]:
    return list(MEASURES)


def stored_score_names() -> list[str]:
    """Scores that are columns of `scores`."""
    return MODEL_SCORES + [m.name for m in MEASURES] + LENGTHS


def score_names() -> list[str]:
    """Every score a rule can rank by: the stored ones and the weighted z-score mix (α = 0.5)."""
    return stored_score_names() + [weighted_name(0.5)]


def weighted_name(alpha: float) -> str:
    """The score name of the weighted mix for ALPHA (what a UI slider turns into)."""
    if not 0 <= alpha <= 1:
        raise InputError(f"weight α must be between 0 and 1, got {alpha}")
    return f"{WEIGHTED_PREFIX}{round(alpha, 4):g}"


def score_columns(name: str) -> list[str]:
    """The stored columns score NAME is computed from (a run must hold values in all of them)."""
    return list(WEIGHTED_PARTS) if _WEIGHTED.fullmatch(name or "") else [_stored(name)]


def score_expression(name: str) -> str:
    """The SQL expression over `scores` columns for a score NAME (validated: never user SQL).

    `weighted:α` uses window aggregates (z-scores over every row the query sees), so evaluate it
    over exactly one run's rows, in its own SELECT: `SELECT sample_id, <expr> AS score FROM scores
    WHERE run_id = ?`, and filter, rank or aggregate that result in an outer query.
    """
    match = _WEIGHTED.fullmatch(name or "")
    if not match:
        return _stored(name)
    alpha = float(match.group(1))
    terms = [
        f"{w:g} * {_z(col)}"
        for w, col in zip((alpha, round(1 - alpha, 4)), WEIGHTED_PARTS, strict=True)
        if w
    ]
    return "(" + " + ".join(terms) + ")"


def _z(col: str) -> str:
    return f"(({col} - avg({col}) OVER ()) / nullif(stddev_pop({col}) OVER (), 0))"


def _stored(name: str) -> str:
    if name in stored_score_names():
        return name
    if (name or "").startswith(WEIGHTED_PREFIX):
        raise InputError(
            f"bad weighted score {name!r}: write weighted:α with α between 0 and 1 "
            "(up to 4 decimals), e.g. weighted:0.7"
        )
    raise InputError(f"unknown score {name!r}; scores are: {', '.join(score_names())}")
