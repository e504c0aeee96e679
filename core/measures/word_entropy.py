"""H(W,f): a sample's mean word surprisal under its dataset's own word frequencies, in bits.

Words are exactly `re.findall(r"\\w+", text.lower())` (Python's Unicode `\\w`). Splitting runs over
bytes with numpy and counting in Arrow, because one Python object per word caps out near 10 MB/s.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.datasets import read_texts_after
from core.measures.base import Batch, Measure

if TYPE_CHECKING:
    from core.datasets import DatasetInfo
    from core.store import Store

_WORD = re.compile(r"\w")
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_")
# Lowercases ASCII letters, keeps word bytes and bytes >= 0x80, turns every other byte into a space.
_BYTE_TABLE = bytes(
    c + 32 if 65 <= c <= 90 else c if c in _WORD_BYTES or c >= 128 else 32 for c in range(256)
)
COUNT_CHUNK_BYTES = 16_000_000  # text read per query in the counting pass


def split_words(texts: Sequence[str]) -> tuple[pa.LargeStringArray, np.ndarray]:
    """All words of TEXTS in order as one Arrow array, and the index of the text each came from.

    A word is a maximal run of word characters of the lowercased text. Over UTF-8 bytes: ASCII
    bytes are classified by a table, and each distinct non-ASCII character once by Python's regex
    (its bytes become spaces when it is not a word character).
    """
    encoded = [(t if t.isascii() else t.lower()).encode() for t in texts]
    raw = bytearray(b" ".join(encoded).translate(_BYTE_TABLE))
    buf = np.frombuffer(raw, dtype=np.uint8)
    _blank_non_word_characters(buf)
    is_word = (buf != 32).view(np.int8)
    edges = np.flatnonzero(np.diff(is_word, prepend=np.int8(0), append=np.int8(0)))
    starts, ends = edges[0::2], edges[1::2]
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    words = pa.LargeStringArray.from_buffers(
        len(starts), pa.py_buffer(offsets), pa.py_buffer(raw.translate(None, b" "))
    )
    text_starts = np.zeros(len(encoded), dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded))[:-1] + 1, out=text_starts[1:])
    per_text = np.diff(np.searchsorted(starts, text_starts), append=len(starts))
    return words, np.repeat(np.arange(len(encoded)), per_text)


def _blank_non_word_characters(buf: np.ndarray) -> None:
    """Overwrite the UTF-8 bytes of every non-ASCII character that `\\w` rejects with spaces."""
    lead = np.flatnonzero(buf >= 0xC0)
    if not len(lead):
        return
    first = buf[lead].astype(np.int64)
    size = 2 + (first >= 0xE0) + (first >= 0xF0)
    code = first & np.choose(size - 2, [0x1F, 0x0F, 0x07])
    for k in (1, 2, 3):
        more = size > k
        code[more] = (code[more] << 6) | (buf[lead[more] + k] & 0x3F)
    distinct, which = np.unique(code, return_inverse=True)
    non_word = np.array([not _WORD.match(chr(c)) for c in distinct.tolist()])[which]
    for k in range(4):
        at = lead[non_word & (size > k)] + k
        buf[at] = 32


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


class WordEntropy(Measure):
    name = "word_entropy"
    unit = "bits/word"
    description = (
        "H(W,f): mean of −log₂ f(w) over the sample's words, f = the word's frequency in the whole "
        "dataset. Model-free; high for samples full of rare words."
    )
    needs_model = False

    def __init__(self) -> None:
        self._fingerprint: str | None = None
        self._vocab = pa.array([], pa.large_string())
        self._surprisal = np.zeros(0)
        self._last: tuple[Batch | None, list[float | None]] = (None, [])

    def prepare(self, store: Store, dataset: DatasetInfo) -> None:
        if self._fingerprint == dataset.fingerprint:
            return
        table = load_word_counts(store, dataset.fingerprint)
        if table.num_rows == 0:
            write_word_counts(store, dataset.fingerprint, count_dataset_words(store, dataset))
            table = load_word_counts(store, dataset.fingerprint)
        counts = table.column("count").to_numpy().astype(np.float64)
        self._vocab = table.column("word").cast(pa.large_string()).combine_chunks()
        self._surprisal = -np.log2(counts / counts.sum())
        self._fingerprint = dataset.fingerprint

    def compute(self, batch: Batch) -> list[float | None]:
        # `combined` asks for the same batch right after; answer it from the last result.
        if batch is self._last[0]:
            return self._last[1]
        if self._fingerprint is None:
            raise RuntimeError("word_entropy.prepare() must run before compute()")
        words, parents = split_words(batch.texts)
        index = pc.index_in(words, value_set=self._vocab)
        if index.null_count:
            raise RuntimeError("a word is missing from the dataset's word counts")
        n = len(batch.texts)
        sums = np.bincount(parents, weights=self._surprisal[index.to_numpy()], minlength=n)
        counts = np.bincount(parents, minlength=n)
        values = [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]
        self._last = (batch, values)
        return values
