"""H(W,f): a sample's mean word surprisal under its dataset's own word frequencies, in bits.

Words are exactly `re.findall(r"\\w+", text.lower())` (Python's Unicode `\\w`). Splitting runs over
bytes with numpy, because one Python object per word caps out near 10 MB/s. The frequencies come
prepared (core/corpus.py counts them once per dataset), so compute() is a pure function.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.measures.base import Batch, Measure

if TYPE_CHECKING:
    from core.corpus import CorpusStats

_WORD = re.compile(r"\w")
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_")
# Lowercases ASCII letters, keeps word bytes and bytes >= 0x80, turns every other byte into a space.
_BYTE_TABLE = bytes(
    c + 32 if 65 <= c <= 90 else c if c in _WORD_BYTES or c >= 128 else 32 for c in range(256)
)


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


class WordEntropy(Measure):
    name = "word_entropy"
    needs_corpus = True

    def compute(self, batch: Batch, corpus: CorpusStats | None) -> list[float | None]:
        if corpus is None:
            raise RuntimeError("word_entropy needs the dataset's corpus statistics")
        words, parents = split_words(batch.texts)
        index = pc.index_in(words, value_set=corpus.words)
        if index.null_count:
            raise RuntimeError("a word is missing from the dataset's word counts")
        n = len(batch.texts)
        sums = np.bincount(parents, weights=corpus.surprisal[index.to_numpy()], minlength=n)
        counts = np.bincount(parents, minlength=n)
        return [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]
