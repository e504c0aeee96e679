"""Score histograms: equal-width bins, from DuckDB (Explore) or from a cached ranking (Prune)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # core.prune builds its previews with ranking_histogram
    from core.prune import Ranking


@dataclass
class Histogram:
    score: str
    log_x: bool
    edges: list[float]  # bins + 1 edges, in score units (already 10^x on a log axis)
    counts: list[int]
    n_values: int  # values counted in the bins
    n_left_out: int  # samples with no value (or, on a log axis, a value <= 0)
    by_group: dict[str, list[int]] = field(default_factory=dict)  # group label -> its counts

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"left": self.edges[:-1], "right": self.edges[1:], "count": self.counts}
        )


def ranking_histogram(ranking: Ranking, bins: int = 80) -> Histogram:
    """Equal-width bins of the ranked scores: edge lookups in the sorted array, O(bins·log N)."""
    if not ranking.n:
        return Histogram(ranking.score, False, [], [], 0, ranking.n_unscored)
    lo, hi = float(ranking.scores[0]), float(ranking.scores[-1])
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    positions = np.searchsorted(ranking.scores, edges[1:-1], side="left")
    counts = np.diff(np.concatenate([[0], positions, [ranking.n]]))
    return Histogram(
        ranking.score, False, edges.tolist(), counts.tolist(), ranking.n, ranking.n_unscored
    )
