"""Every measure infoprune computes, in the catalogue's order (core/scores.py declares each score).

Adding a measure is one catalogue entry, one module and one line here. Scores of source DATASET
(the duplicate counts) have no Measure: a run computes them over the whole dataset when it completes
(core/duplicates.py), and none may be implemented here.
"""

from __future__ import annotations

from core.measures.base import Measure
from core.measures.combined import Combined
from core.measures.gzip_ratio import GzipBitsPerByte
from core.measures.word_entropy import WordEntropy
from core.scores import DATASET, MEASURE, stored_score_names

IMPLEMENTATIONS: tuple[type[Measure], ...] = (WordEntropy, GzipBitsPerByte, Combined)


def _in_catalogue_order(classes: tuple[type[Measure], ...]) -> list[Measure]:
    """One instance per measure score of the catalogue, in its order; a gap either way is a bug."""
    by_name = {cls.name: cls for cls in classes}
    names = stored_score_names(MEASURE)
    if set(by_name) & set(stored_score_names(DATASET)):
        raise RuntimeError("dataset-level scores are computed by core/duplicates.py, not a Measure")
    if sorted(by_name) != sorted(names):
        raise RuntimeError(f"measures {sorted(by_name)} do not match the catalogue's {names}")
    measures = [by_name[n]() for n in names]
    for i, m in enumerate(measures):
        if not set(m.depends_on) <= {p.name for p in measures[:i]}:
            raise RuntimeError(f"{m.name} must come after the measures it reads {m.depends_on}")
    return measures


MEASURES: list[Measure] = _in_catalogue_order(IMPLEMENTATIONS)


def all_measures() -> list[Measure]:
    return list(MEASURES)
