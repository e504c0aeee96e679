"""The catalogue of scores: every per-sample number infoprune stores, declared once.

The columns of `scores`, the export's score columns, the score pickers of Prune, Explore and
Compare and the measures registry all derive from SCORES. A new measure is one entry here plus its
module in core/measures/. Imports nothing of infoprune but its errors, so the store can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InputError

ENGINE = "engine"  # from the model's bits and the text's length (core/scoring.py)
MEASURE = "measure"  # one module in core/measures/
DATASET = "dataset"  # a pass over the whole dataset when a run completes (core/duplicates.py)
INFORMATION = "more information"  # what a higher value means: it ranks samples by information
LENGTH = "longer"  # a length: it ranks samples by size only
REDUNDANCY = "more duplicated"  # a count of other samples that repeat this one


@dataclass(frozen=True)
class Score:
    """One per-sample number: NAME is its column in `scores`, LABEL names it in charts."""

    name: str
    unit: str
    description: str
    source: str  # ENGINE, MEASURE or DATASET
    needs_model: bool
    direction: str = INFORMATION  # what a higher value means: INFORMATION, LENGTH or REDUNDANCY
    label: str = ""  # the name itself when empty

    @property
    def sql_type(self) -> str:
        return "BIGINT" if self.direction in (LENGTH, REDUNDANCY) else "DOUBLE"


# In the order pickers offer them: the paper's H(W,q) first; lengths go last wherever declared.
SCORES: tuple[Score, ...] = (
    Score(
        "bits_per_token",
        "bits/token",
        "bits_total / n_tokens: the paper's H(W,q), the model's mean surprisal per token.",
        ENGINE,
        needs_model=True,
        label="bits per token",
    ),
    Score(
        "bits_total",
        "bits",
        "−Σ log₂ q(w_i | w_<i) over the sample's tokens: its description length under the model.",
        ENGINE,
        needs_model=True,
        label="bits (whole sample)",
    ),
    Score(
        "bits_per_byte",
        "bits/byte",
        "bits_total / n_bytes: independent of the tokenizer, so it compares across models.",
        ENGINE,
        needs_model=True,
        label="bits per byte",
    ),
    Score(
        "word_entropy",
        "bits/word",
        "H(W,f): mean of −log₂ f(w) over the sample's words, f = the word's frequency in the whole "
        "dataset. Model-free; high for samples full of rare words.",
        MEASURE,
        needs_model=False,
    ),
    Score(
        "gzip_bits_per_byte",
        "bits/byte",
        "8 · len(zlib.compress(text, 9)) / len(text) over the UTF-8 bytes: low for repetitive or "
        "boilerplate text. Model-free; short texts pay zlib's fixed overhead.",
        MEASURE,
        needs_model=False,
    ),
    Score(
        "combined",
        "bits",
        "bits_per_token + word_entropy (Kim & Baek's H(W,q) + H(W,f)); empty when either is.",
        MEASURE,
        needs_model=True,
    ),
    Score(
        "dup_count",
        "samples",
        "How many other samples of the dataset have a byte-identical text (0 when unique).",
        DATASET,
        needs_model=False,
        direction=REDUNDANCY,
        label="exact duplicates",
    ),
    Score(
        "near_dup_count",
        "samples",
        "How many other samples of the dataset have an estimated Jaccard similarity ≥ 0.8 over "
        "word 5-gram shingles (MinHash, 128 permutations); exact duplicates included.",
        DATASET,
        needs_model=False,
        direction=REDUNDANCY,
        label="near duplicates",
    ),
    Score(
        "n_tokens",
        "tokens",
        "Tokens the model predicted.",
        ENGINE,
        needs_model=True,
        direction=LENGTH,
        label="length (tokens)",
    ),
    Score(
        "n_bytes",
        "bytes",
        "UTF-8 bytes of the text.",
        ENGINE,
        needs_model=False,
        direction=LENGTH,
        label="length (bytes)",
    ),
)

# The engine's columns of `scores` in the order every store has them (exports and the Explore page
# list a run's columns in table order); measures' columns follow, then the dataset-level ones, in
# catalogue order.
ENGINE_COLUMNS = ("n_bytes", "n_tokens", "bits_total", "bits_per_token", "bits_per_byte")

# weighted:ALPHA = ALPHA·z(bits_per_token) + (1−ALPHA)·z(word_entropy), ALPHA in [0, 1].
WEIGHTED_PREFIX = "weighted:"
WEIGHTED_PARTS = ("bits_per_token", "word_entropy")
_WEIGHTED = re.compile(r"weighted:(0(\.\d{1,4})?|1(\.0{1,4})?)")
_BY_NAME = {s.name: s for s in SCORES}


def get_score(name: str) -> Score:
    """The catalogue entry of stored score NAME (InputError naming the scores otherwise)."""
    return _BY_NAME[_stored(name)]


def stored_score_names(source: str | None = None) -> list[str]:
    """Scores that are columns of `scores` (those of SOURCE only, if given), in picker order."""
    chosen = [s for s in SCORES if source is None or s.source == source]
    return [s.name for s in sorted(chosen, key=lambda s: s.direction == LENGTH)]


def table_columns() -> list[str]:
    """The score columns of `scores` in table order: what an export with scores writes."""
    return list(ENGINE_COLUMNS) + stored_score_names(MEASURE) + stored_score_names(DATASET)


def score_names() -> list[str]:
    """Every score a rule can rank by: the stored ones and the weighted z-score mix (α = 0.5)."""
    return stored_score_names() + [weighted_name(0.5)]


def default_score(available: list[str]) -> str:
    """The score a page starts from among AVAILABLE: the first in `score_names` order, which puts
    the paper's bits per token first and, in a run without a model, word entropy (the model-free
    part of its score) before compression and the duplicate counts."""
    return next((n for n in score_names() if n in available), available[0])


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
    # A term of weight 0 still needs its column: α = 1 ranks the samples every α < 1 does.
    terms = [
        f"{w:g} * {_z(col)}" if w else f"(CASE WHEN {col} IS NULL THEN NULL ELSE 0 END)"
        for w, col in zip((alpha, round(1 - alpha, 4)), WEIGHTED_PARTS, strict=True)
    ]
    return "(" + " + ".join(terms) + ")"


def _z(col: str) -> str:
    return f"(({col} - avg({col}) OVER ()) / nullif(stddev_pop({col}) OVER (), 0))"


def _stored(name: str) -> str:
    if name in _BY_NAME:
        return name
    if (name or "").startswith(WEIGHTED_PREFIX):
        raise InputError(
            f"bad weighted score {name!r}: write weighted:α with α between 0 and 1 "
            "(up to 4 decimals), e.g. weighted:0.7"
        )
    raise InputError(f"unknown score {name!r}; scores are: {', '.join(score_names())}")
