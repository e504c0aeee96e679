"""The paper's ranking score H(W,q) + H(W,f): model bits per token plus word entropy, in bits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.measures.base import Batch, Measure

if TYPE_CHECKING:
    from core.corpus import CorpusStats


class Combined(Measure):
    name = "combined"
    depends_on = ("word_entropy",)

    def compute(self, batch: Batch, corpus: CorpusStats | None) -> list[float | None]:
        if batch.model_scores is None:
            raise RuntimeError("combined needs model scores")
        return [
            s.bits_total / s.n_tokens + h if s.n_tokens and h is not None else None
            for s, h in zip(batch.model_scores, batch.columns["word_entropy"], strict=True)
        ]
