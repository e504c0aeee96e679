"""A dataset's corpus statistics: its word counts, counted once per content fingerprint.

The counts live in the store's `word_counts` table, so a rerun, a copy of the same text under
another name or an attach of Ray score shards never counts twice. Measures get them prepared as
CorpusStats and never touch the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.datasets import DatasetInfo, read_texts_after
from core.measures.word_entropy import split_words
from core.store import Store

if TYPE_CHECKING:
    from core.measures.base import Measure

COUNT_CHUNK_BYTES = 16_000_000  # text read per query in the counting pass


@dataclass(frozen=True)
class CorpusStats:
    """The words of one dataset and the surprisal −log₂ f(w) of each, f = its frequency there."""

    fingerprint: str
    words: pa.LargeStringArray
    surprisal: np.ndarray


def count_words(texts: Sequence[str], counter: Counter) -> None:
    """Add the word counts of TEXTS to COUNTER (which holds one entry per distinct word)."""
    counts = pc.value_counts(split_words(texts)[0])
    counter.update(dict(zip(counts.field(0).to_pylist(), counts.field(1).to_pylist(), strict=True)))


def count_dataset_words(store: Store, dataset: DatasetInfo) -> Counter:
    """Word counts over every sample of DATASET, read in chunks (one short query each)."""
    rows_per_chunk = max(1, int(COUNT_CHUNK_BYTES * dataset.n_samples / max(dataset.n_bytes, 1)))
    counter: Counter = Counter()
    last_row = -1
    while rows := read_texts_after(store, dataset.name, last_row, rows_per_chunk):
        count_words([r[2] for r in rows], counter)
        last_row = rows[-1][0]
    return counter


def load_word_counts(store: Store, fingerprint: str) -> pa.Table:
    """The cached counts of a dataset's words (empty if never counted)."""
    with store.connect() as con:
        return con.sql(
            "SELECT word, count FROM word_counts WHERE fingerprint = ?", params=[fingerprint]
        ).to_arrow_table()


def write_word_counts(store: Store, fingerprint: str, counter: Counter) -> None:
    """Cache COUNTER for FINGERPRINT unless another run already did (first writer wins)."""
    table = pa.table(
        {
            "fingerprint": pa.array([fingerprint] * len(counter), pa.string()),
            "word": pa.array(list(counter), pa.string()),
            "count": pa.array(list(counter.values()), pa.int64()),
        }
    )
    with store.transaction() as con:
        if con.execute(
            "SELECT 1 FROM word_counts WHERE fingerprint = ? LIMIT 1", [fingerprint]
        ).fetchall():
            return
        con.register("_word_counts", table)
        con.execute("INSERT INTO word_counts SELECT * FROM _word_counts")
        con.unregister("_word_counts")


def corpus_stats(fingerprint: str, counts: pa.Table) -> CorpusStats:
    """The statistics of a `word_counts` table (columns word, count)."""
    n = counts.column("count").to_numpy().astype(np.float64)
    words = counts.column("word").cast(pa.large_string()).combine_chunks()
    return CorpusStats(fingerprint, words, -np.log2(n / n.sum()))


def load_corpus_stats(store: Store, dataset: DatasetInfo) -> CorpusStats:
    """DATASET's statistics, counting its words first if no run has yet."""
    table = load_word_counts(store, dataset.fingerprint)
    if table.num_rows == 0:
        write_word_counts(store, dataset.fingerprint, count_dataset_words(store, dataset))
        table = load_word_counts(store, dataset.fingerprint)
    return corpus_stats(dataset.fingerprint, table)


def load_corpus_for(
    store: Store, dataset: DatasetInfo, measures: list[Measure]
) -> CorpusStats | None:
    """What MEASURES read of DATASET's corpus: None, with no counting pass, when none needs it."""
    return load_corpus_stats(store, dataset) if any(m.needs_corpus for m in measures) else None
