"""Compressed size per byte: a model-free description length, with zlib as the coder."""

from __future__ import annotations

import zlib

from core.measures.base import Batch, Measure


class GzipBitsPerByte(Measure):
    name = "gzip_bits_per_byte"
    unit = "bits/byte"
    description = (
        "8 · len(zlib.compress(text, 9)) / len(text) over the UTF-8 bytes: low for repetitive or "
        "boilerplate text. Model-free; short texts pay zlib's fixed overhead."
    )
    needs_model = False

    def compute(self, batch: Batch) -> list[float | None]:
        out: list[float | None] = []
        for text in batch.texts:
            data = text.encode()
            out.append(8 * len(zlib.compress(data, 9)) / len(data) if data else None)
        return out
