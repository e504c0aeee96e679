"""The one interface every information measure implements, and how a list of them runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.scores import Score, get_score

if TYPE_CHECKING:
    from core.corpus import CorpusStats
    from core.engine import SampleScore


@dataclass
class Batch:
    """What a measure sees of one batch: the texts, the model scores when there is a model, and
    the columns of the measures computed before it (COLUMNS, by name)."""

    texts: list[str]
    n_bytes: list[int]
    model_scores: list[SampleScore] | None
    columns: dict[str, list[float | None]] = field(default_factory=dict)


class Measure:
    """A per-sample number, a pure function of a batch and the dataset's corpus statistics.

    `name` is its entry in the catalogue (core/scores.py: unit, meaning, needs a model).
    """

    name: str = ""
    needs_corpus: bool = False  # reads CorpusStats (the dataset's word frequencies)
    depends_on: tuple[str, ...] = ()  # measures whose columns compute() reads from the batch

    @property
    def score(self) -> Score:
        return get_score(self.name)

    @property
    def unit(self) -> str:
        return self.score.unit

    @property
    def description(self) -> str:
        return self.score.description

    @property
    def needs_model(self) -> bool:
        return self.score.needs_model

    def compute(self, batch: Batch, corpus: CorpusStats | None) -> list[float | None]:
        raise NotImplementedError


def compute_all(
    measures: list[Measure], batch: Batch, corpus: CorpusStats | None = None
) -> dict[str, list[float | None]]:
    """Each measure's values for BATCH, in order: a measure reads the columns of those before it."""
    seen = Batch(batch.texts, batch.n_bytes, batch.model_scores, dict(batch.columns))
    for m in measures:
        missing = [d for d in m.depends_on if d not in seen.columns]
        if missing:
            raise RuntimeError(f"{m.name} reads {', '.join(missing)}: compute that before it")
        seen.columns[m.name] = m.compute(seen, corpus)
    return {m.name: seen.columns[m.name] for m in measures}


def corpus_wide(measures: list[Measure]) -> list[Measure]:
    """Those of MEASURES that need the whole dataset's statistics, themselves or through a measure
    they read (listed before them): what a shard cannot compute alone."""
    wide: set[str] = set()
    for m in measures:
        if m.needs_corpus or wide.intersection(m.depends_on):
            wide.add(m.name)
    return [m for m in measures if m.name in wide]
