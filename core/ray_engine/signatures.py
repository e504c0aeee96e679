"""The near-duplicate pass's signature step on Ray: the MinHash signatures of a dataset's distinct
texts are computed by `map_batches` tasks; bucketing, verification and the components stay on the
driver (core/duplicates.py), which receives 512 bytes per distinct text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from core.duplicates import SignChunks, signature_table


def sign_on_ray(ray) -> SignChunks:
    """A signature step that maps `signature_table` over the chunks on the cluster, one task per
    chunk (each of about core.duplicates.READ_CHUNK_BYTES of text)."""

    def sign(chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
        blocks = list(chunks)
        if not blocks:
            return
        ds = ray.data.from_arrow(blocks).map_batches(
            signature_table, batch_format="pyarrow", batch_size=None
        )
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)

    return sign
