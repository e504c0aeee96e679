"""The one interface every information measure implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.datasets import DatasetInfo
    from core.engine import SampleScore
    from core.store import Store


@dataclass
class Batch:
    """What a measure sees of one batch: the texts, and the model scores when there is a model."""

    texts: list[str]
    n_bytes: list[int]
    model_scores: list[SampleScore] | None


class Measure:
    """A per-sample number: `name` is its column in `scores`, `unit` is shown in the UI."""

    name: str = ""
    unit: str = ""
    description: str = ""
    needs_model: bool = False

    def prepare(self, store: Store, dataset: DatasetInfo) -> None:
        """A corpus-wide pass before scoring (e.g. word frequencies); most measures need none."""

    def compute(self, batch: Batch) -> list[float | None]:
        raise NotImplementedError
