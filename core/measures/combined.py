"""The paper's ranking score H(W,q) + H(W,f): model bits per token plus word entropy, in bits."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.measures.base import Batch, Measure
from core.measures.word_entropy import WordEntropy

if TYPE_CHECKING:
    from core.datasets import DatasetInfo
    from core.store import Store


class Combined(Measure):
    name = "combined"
    unit = "bits"
    description = (
        "bits_per_token + word_entropy (Kim & Baek's H(W,q) + H(W,f)); empty when either is."
    )
    needs_model = True

    def __init__(self, word_entropy: WordEntropy) -> None:
        self.word_entropy = word_entropy

    def prepare(self, store: Store, dataset: DatasetInfo) -> None:
        self.word_entropy.prepare(store, dataset)

    def compute(self, batch: Batch) -> list[float | None]:
        if batch.model_scores is None:
            raise RuntimeError("combined needs model scores")
        entropies = self.word_entropy.compute(batch)
        return [
            s.bits_total / s.n_tokens + h if s.n_tokens and h is not None else None
            for s, h in zip(batch.model_scores, entropies, strict=True)
        ]
