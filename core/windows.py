"""Windows over a long sample, and what their overlap costs: no torch, so the UI can ask too.

A sample longer than the window W is scored by windows starting every S tokens; each token is
predicted by the first window holding it, with at least W - S tokens of left context. The price
of that context is recomputation: the model runs over about W / S positions per scored token.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def plan_windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) per window so that every position 1..n-1 is scored exactly once.

    Windows start at 0, S, 2S, ...; a position is scored by the first window holding it, and a
    window's first position is context only. A stride of W therefore acts as W - 1: without one
    token of overlap the first token of each window would never be predicted.
    """
    if window < 2 or stride < 1:
        raise ValueError(f"need window >= 2 and stride >= 1, got {window}, {stride}")
    step = min(stride, window - 1)
    plan = []
    start, scored_to = 0, 1
    while scored_to < n:
        end = min(start + window, n)
        plan.append((start, end, scored_to))
        scored_to = end
        start += step
    return plan


def positions_per_token(n_tokens: Iterable[int], window: int, stride: int) -> float | None:
    """Positions the model computes per token it predicts, over samples that predict N_TOKENS
    tokens each (a sequence one longer: the prefix token, or a first token used as context).
    1.0 means nothing is computed twice; None when nothing is predicted."""
    step = min(stride, window - 1)
    n = np.asarray(n_tokens if isinstance(n_tokens, np.ndarray) else list(n_tokens), np.int64)
    n = n[n > 0]
    if not n.size:
        return None
    length = n + 1
    # Windows start at 0, step, ...; all but the last are full, the last ends at the sequence's end.
    extra = np.where(length > window, -(-(length - window) // step), 0)
    positions = extra * window + (length - extra * step)
    return float(positions.sum() / n.sum())
