"""Compressed size per byte: a model-free description length, with zlib as the coder."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from core.measures.base import Batch, Measure

if TYPE_CHECKING:
    from core.corpus import CorpusStats


class GzipBitsPerByte(Measure):
    name = "gzip_bits_per_byte"

    def compute(self, batch: Batch, corpus: CorpusStats | None) -> list[float | None]:
        out: list[float | None] = []
        for text in batch.texts:
            data = text.encode()
            out.append(8 * len(zlib.compress(data, 9)) / len(data) if data else None)
        return out
