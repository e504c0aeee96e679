"""Exact and near duplicates of a dataset: two per-sample counts and the clusters they form.

The contract, over the whole dataset (a run scored with --limit gets the counts of its own
samples, and the clusters of all: `dedup` prunes an unscored copy as the rules say):
- `dup_count`: how many *other* samples have a byte-identical text (0 when unique).
- `near_dup_count`: how many other samples have an estimated Jaccard similarity >= 0.8 with it,
  over sets of word 5-gram shingles. Words are those of core/measures/word_entropy.py (`\\w+` of
  the lowercased text); a text of 1-4 words is one shingle of all its words; a text with no word
  has no shingle and is near only to its exact copies. The estimate is the fraction of 128 MinHash
  values (fixed seed) that agree; candidate pairs are those sharing one of 32 LSH bands of 4
  values, so a pair at similarity 0.8 is missed with probability ~5e-8 (0.7: ~2e-4). A
  byte-identical text always counts, hence near_dup_count >= dup_count.
- `dup_clusters`: one row per sample with any duplicate (near_dup_count > 0). `cluster_id` is the
  connected component of near-duplicate pairs, `exact_cluster_id` the group of identical texts
  (NULL when the sample has none); each is the smallest `samples.row_idx` of its members.

Exact groups come from DuckDB (texts whose hash repeats, partitioned by the text itself).
MinHash runs only on the first sample of each exact group: `signature_table` is the one pure step
every driver maps over chunks of texts (here in-process, on Ray in core/ray_engine/signatures.py);
bucketing, verification and the union-find run here, on arrays. What is kept is the signatures,
512 bytes per distinct text; band keys are computed one band at a time.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import rensa

from core.datasets import DatasetChanged, change_since
from core.errors import InputError
from core.measures.word_entropy import split_words
from core.store import Store

if TYPE_CHECKING:  # pandas only for the UI's tables: the scoring loop starts sooner
    import pandas as pd

SHINGLE_WORDS = 5
NUM_PERM = 128
SEED = 20_160_816  # fixed: signatures computed by any process or node agree
THRESHOLD = 0.8
BANDS, BAND_ROWS = 32, 4  # BANDS * BAND_ROWS == NUM_PERM: candidates from ~0.4 up
MIN_AGREEING = math.ceil(THRESHOLD * NUM_PERM)  # of NUM_PERM values, for a near duplicate
READ_CHUNK_BYTES = 16_000_000  # text read per query, and signed per task
EXACT_MEMORY_LIMIT = "256MB"  # DuckDB's memory for the exact pass (it spills beyond)
SIGN_BATCH_BYTES = 4_000_000  # text shingled at a time
PAIR_BLOCK = 1 << 20  # candidate pairs verified at a time: bounds memory in a huge bucket

_K = np.uint64(0x9E3779B97F4A7C15)

# A driver's signature step: chunks of (pos, text) in, (pos, signature) out, in any order.
SignChunks = Callable[[Iterable[pa.Table]], Iterator[pa.Table]]


# ---- shingles and signatures (pure) ------------------------------------------------------------


def shingle_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One 64-bit hash per word 5-gram of each text, flat, and each text's offsets into them."""
    words, parents = split_words(texts)
    n = len(texts)
    counts = np.bincount(parents, minlength=n)
    if not len(words):
        return np.zeros(0, np.uint64), np.zeros(n + 1, np.uint64)
    word_hash = _word_hashes(words)
    starts = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    pos = np.arange(len(word_hash)) - starts[parents]
    # gram[i] folds the words i..i+4 (whatever text they belong to; only valid starts are kept).
    gram = word_hash.copy()
    for d in range(1, SHINGLE_WORDS):
        gram *= _K
        gram[:-d] += word_hash[d:]
    short = np.flatnonzero((counts > 0) & (counts < SHINGLE_WORDS))
    if len(short):  # a text of 1-4 words: one shingle of exactly its words
        folded = word_hash[starts[short]].copy()
        for d in range(1, SHINGLE_WORDS - 1):
            more = counts[short] > d
            folded[more] = folded[more] * _K + word_hash[starts[short][more] + d]
        gram[starts[short]] = folded
    size = counts[parents]
    keep = (pos <= size - SHINGLE_WORDS) | ((pos == 0) & (size < SHINGLE_WORDS))
    per_text = np.where(counts >= SHINGLE_WORDS, counts - SHINGLE_WORDS + 1, counts > 0)
    offsets = np.zeros(n + 1, np.uint64)
    np.cumsum(per_text, out=offsets[1:])
    return _mix(gram[keep]), offsets


def _word_hashes(words: pa.LargeStringArray) -> np.ndarray:
    """A stable 64-bit hash per word (blake2b of its UTF-8), hashing each distinct word once."""
    encoded = pc.dictionary_encode(words)
    distinct = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(w, digest_size=8).digest(), "little")
            for w in encoded.dictionary.cast(pa.large_binary()).to_pylist()
        ),
        np.uint64,
        len(encoded.dictionary),
    )
    return distinct[encoded.indices.to_numpy()]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the folded words over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def minhash_signatures(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each text's MinHash signature, [n, NUM_PERM] uint32, and whether it has any shingle.
    Texts go in slices of about SIGN_BATCH_BYTES: the shingling's arrays are ~20x their text."""
    ends = np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)))
    total = int(ends[-1]) if len(texts) else 0
    cuts = np.searchsorted(ends, np.arange(SIGN_BATCH_BYTES, total, SIGN_BATCH_BYTES), "right")
    bounds = np.unique([0, *cuts, len(texts)])
    signatures, has_shingles = [np.zeros((0, NUM_PERM), np.uint32)], [np.zeros(0, bool)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        hashes, offsets = shingle_hashes(texts[a:b])
        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            hashes, offsets, NUM_PERM, SEED
        )
        signatures.append(np.array(matrix.to_rows(), np.uint32).reshape(-1, NUM_PERM))
        has_shingles.append(np.diff(offsets) > 0)
    return np.concatenate(signatures), np.concatenate(has_shingles)


def signature_table(chunk: pa.Table) -> pa.Table:
    """The signature step of every driver: (pos, text) -> (pos, signature), a null signature
    for a text without shingles."""
    signatures, has_shingles = minhash_signatures(chunk.column("text").to_pylist())
    values = pa.array(signatures.reshape(-1), pa.uint32())
    column = pa.FixedSizeListArray.from_arrays(
        values, NUM_PERM, mask=pa.array(~has_shingles, pa.bool_())
    )
    return pa.table({"pos": chunk.column("pos"), "signature": column})


def sign_locally(chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The local driver's signature step: one chunk after the other, in this process."""
    for chunk in chunks:
        yield signature_table(chunk)


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """[n, k] uint64: one hash of each band of BAND_ROWS values of [n, k * BAND_ROWS] SIGNATURES."""
    n, width = signatures.shape
    parts = np.ascontiguousarray(signatures).reshape(n, width // BAND_ROWS, BAND_ROWS)
    halves = parts.view(np.uint64)  # BAND_ROWS uint32 -> BAND_ROWS / 2 uint64
    key = halves[:, :, 0].copy()
    for d in range(1, halves.shape[2]):
        key = key * _K + halves[:, :, d]
    return _mix(key)


# ---- candidates, verification, components (pure) -----------------------------------------------


def near_pairs(signatures: np.ndarray, valid: np.ndarray) -> Iterator[tuple]:
    """(i, j) arrays of the rows of SIGNATURES whose estimated Jaccard >= THRESHOLD, i < j, each
    pair once, in blocks: candidates share a band's key; rows not VALID (no shingles) take no
    part. A bucket of m rows costs m² / 2 verifications, at most PAIR_BLOCK at a time."""
    rows = np.flatnonzero(valid)
    if len(rows) < 2:
        return
    for band in range(BANDS):
        width = slice(band * BAND_ROWS, (band + 1) * BAND_ROWS)
        keys = band_keys(signatures[rows, width])[:, 0]
        order = np.argsort(keys, kind="stable")
        sorted_keys, order = keys[order], rows[order]
        edge = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
        bounds = np.concatenate([[0], edge, [len(order)]])
        # Each member pairs with every later member of its bucket.
        later = np.repeat(bounds[1:], np.diff(bounds)) - np.arange(len(order)) - 1
        total = np.cumsum(later)
        cut = 0
        while (done := total[cut - 1] if cut else 0) < total[-1]:
            stop = max(int(np.searchsorted(total, done + PAIR_BLOCK, "right")), cut + 1)
            i, j = _pairs(cut, later[cut:stop])
            i, j = order[i], order[j]
            if band:  # a pair sharing an earlier band was verified there
                earlier = signatures[:, : width.start]
                fresh = ~(band_keys(earlier[i]) == band_keys(earlier[j])).any(axis=1)
                i, j = i[fresh], j[fresh]
            near = (signatures[i] == signatures[j]).sum(axis=1) >= MIN_AGREEING
            if near.any():
                yield np.minimum(i[near], j[near]), np.maximum(i[near], j[near])
            cut = stop


def _pairs(first: int, later: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (p, q) with p = FIRST + k and q in p+1 .. p+LATER[k]."""
    n = int(later.sum())
    p = np.repeat(np.arange(first, first + len(later)), later)
    step = np.arange(n) - np.repeat(np.cumsum(later) - later, later)
    return p, p + 1 + step


def union(parent: np.ndarray, i: np.ndarray, j: np.ndarray) -> None:
    """Join the sets of each I[k] and J[k] in PARENT (a forest whose roots are their smallest
    member: every link points to a smaller index), in place."""
    while len(i):
        _compress(parent)
        ri, rj = parent[i], parent[j]
        apart = ri != rj
        i, j, ri, rj = i[apart], j[apart], ri[apart], rj[apart]
        np.minimum.at(parent, np.maximum(ri, rj), np.minimum(ri, rj))


def _compress(parent: np.ndarray) -> None:
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


# ---- a dataset's duplicates (reads the store in short queries) ---------------------------------


@dataclass(frozen=True)
class Duplicates:
    """A dataset's results: COUNTS (sample_id, dup_count, near_dup_count) for every sample and
    CLUSTERS (sample_id, cluster_id, exact_cluster_id) for those with a duplicate."""

    counts: pa.Table
    clusters: pa.Table


def find_duplicates(store: Store, dataset: str, sign: SignChunks = sign_locally) -> Duplicates:
    """DATASET's duplicate counts and clusters; SIGN is the driver's signature step."""
    exact = load_exact_groups(store, dataset)
    is_rep = exact.row_idx == exact.first_row
    rep_rows = exact.row_idx[is_rep]  # one per distinct text, in row order
    rep_of = np.searchsorted(rep_rows, exact.first_row)  # each sample's distinct text
    chunks = read_distinct_texts(store, dataset, exact)
    signatures, valid = collect_signatures(sign(chunks), len(rep_rows))
    copies = exact.n_same[is_rep]
    near = copies - 1
    parent = np.arange(len(rep_rows))
    for i, j in near_pairs(signatures, valid):
        near += np.bincount(i, copies[j], len(near)).astype(np.int64)
        near += np.bincount(j, copies[i], len(near)).astype(np.int64)
        union(parent, i, j)
    _compress(parent)
    near_count = near[rep_of]
    counts = pa.table(
        {
            "sample_id": exact.sample_id,
            "dup_count": pa.array(exact.n_same - 1, pa.int64()),
            "near_dup_count": pa.array(near_count, pa.int64()),
        }
    )
    has_dup = near_count > 0
    copied = exact.n_same[has_dup] > 1
    clusters = pa.table(
        {
            "sample_id": exact.sample_id.filter(pa.array(has_dup)),
            "cluster_id": pa.array(rep_rows[parent[rep_of[has_dup]]], pa.int64()),
            "exact_cluster_id": pa.array(exact.first_row[has_dup], pa.int64(), mask=~copied),
        }
    )
    return Duplicates(counts, clusters)


@dataclass(frozen=True)
class ExactGroups:
    """Each sample of a dataset, in row order, with the group of samples of the same text."""

    row_idx: np.ndarray
    sample_id: pa.Array
    n_bytes: np.ndarray
    first_row: np.ndarray  # the smallest row_idx of the group
    n_same: np.ndarray  # the group's size, the sample included


def load_exact_groups(store: Store, dataset: str) -> ExactGroups:
    """DATASET's samples and their groups of identical texts, in one query. Only texts whose
    64-bit hash repeats are compared (a window partitioned by the text itself, so a hash
    collision never merges two texts), under a memory limit: DuckDB spills beyond it."""
    with store.connect() as con:
        con.execute(f"SET memory_limit = '{EXACT_MEMORY_LIMIT}'")
        try:
            table = con.sql(
                "WITH h AS (SELECT row_idx, hash(text) AS h FROM samples WHERE dataset = ?), "
                "repeated AS (SELECT row_idx FROM h WHERE h IN "
                "(SELECT h FROM h GROUP BY h HAVING count(*) > 1)), "
                "g AS (SELECT row_idx, min(row_idx) OVER w AS first_row, count(*) OVER w AS n_same "
                "FROM samples WHERE dataset = ? AND row_idx IN (SELECT row_idx FROM repeated) "
                "WINDOW w AS (PARTITION BY text)) "
                "SELECT s.row_idx, s.sample_id, s.n_bytes, coalesce(g.first_row, s.row_idx) "
                "AS first_row, coalesce(g.n_same, 1) AS n_same FROM samples s "
                "LEFT JOIN g USING (row_idx) WHERE s.dataset = ? ORDER BY s.row_idx",
                params=[dataset, dataset, dataset],
            ).to_arrow_table()
        finally:
            con.execute("RESET memory_limit")  # other connections of this process share it
    return ExactGroups(
        row_idx=table.column("row_idx").to_numpy(),
        sample_id=table.column("sample_id").combine_chunks(),
        n_bytes=table.column("n_bytes").to_numpy(),
        first_row=table.column("first_row").to_numpy(),
        n_same=table.column("n_same").to_numpy(),
    )


def read_distinct_texts(store: Store, dataset: str, exact: ExactGroups) -> Iterator[pa.Table]:
    """(pos, text) of the first sample of each distinct text, pos its rank among them, read by
    ranges of rows holding about READ_CHUNK_BYTES of text, one short query each."""
    rep_rows = exact.row_idx[exact.row_idx == exact.first_row]
    ends = np.cumsum(exact.n_bytes)
    total = int(ends[-1]) if len(ends) else 0
    cuts = np.searchsorted(ends, np.arange(READ_CHUNK_BYTES, total, READ_CHUNK_BYTES), "right")
    bounds = np.unique([0, *cuts, len(ends)])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        with store.connect() as con:
            table = con.sql(
                "SELECT row_idx, text FROM samples WHERE dataset = ? AND row_idx BETWEEN ? AND ? "
                "ORDER BY row_idx",
                params=[dataset, int(exact.row_idx[a]), int(exact.row_idx[b - 1])],
            ).to_arrow_table()
        read = table.column("row_idx").to_numpy()
        pos = np.searchsorted(rep_rows, read)
        mine = (pos < len(rep_rows)) & (rep_rows[np.minimum(pos, len(rep_rows) - 1)] == read)
        if mine.any():
            yield pa.table(
                {"pos": pa.array(pos[mine], pa.int64()), "text": table.column("text").filter(mine)}
            )


def collect_signatures(signed: Iterable[pa.Table], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The [N, NUM_PERM] signatures of the (pos, signature) tables SIGNED, and which are set."""
    signatures = np.zeros((n, NUM_PERM), np.uint32)
    valid = np.zeros(n, bool)
    for table in signed:
        pos = table.column("pos").to_numpy()
        column = table.column("signature").combine_chunks()
        has = column.is_valid().to_numpy(zero_copy_only=False)
        signatures[pos[has]] = column.flatten().to_numpy().reshape(-1, NUM_PERM)
        valid[pos] = has
    return signatures, valid


# ---- a run's rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What a run will get: computed DUPLICATES, or None where another run's can be copied."""

    duplicates: Duplicates | None


def prepare_duplicates(
    store: Store, dataset: str, fingerprint: str, sign: SignChunks = sign_locally
) -> Prepared:
    """Everything slow, before the transaction that writes it: nothing when a done run of the
    same content already holds results (they are copied), else DATASET's duplicates."""
    with store.connect() as con:
        if _copy_source(con, dataset, fingerprint):
            return Prepared(None)
    return Prepared(find_duplicates(store, dataset, sign))


def write_duplicates(con, run_id: str, prepared: Prepared) -> int:
    """PREPARED into RUN's rows of `scores` and `dup_clusters`, inside the caller's transaction;
    returns how many of the run's samples are still without counts (0 when all went well)."""
    dataset, fingerprint = con.execute(
        "SELECT dataset, fingerprint FROM runs WHERE run_id = ?", [run_id]
    ).fetchall()[0]
    con.execute("DELETE FROM dup_clusters WHERE run_id = ?", [run_id])
    if prepared.duplicates:
        _insert(con, run_id, prepared.duplicates)
    elif source := _copy_source(con, dataset, fingerprint):
        _copy(con, run_id, source, dataset)
    return con.execute(
        "SELECT count(*) - count(near_dup_count) FROM scores WHERE run_id = ?", [run_id]
    ).fetchall()[0][0]


def _copy_source(con, dataset: str, fingerprint: str) -> str | None:
    """A done run of DATASET's content, over every sample, whose rows all hold the counts."""
    found = con.execute(
        "SELECT r.run_id FROM runs r JOIN datasets d ON d.name = ? AND d.fingerprint = ? "
        "WHERE r.fingerprint = d.fingerprint AND r.status = 'done' AND r.n_total = d.n_samples "
        "AND (SELECT count(near_dup_count) FROM scores s WHERE s.run_id = r.run_id) = d.n_samples "
        "ORDER BY r.finished_at, r.run_id LIMIT 1",
        [dataset, fingerprint],
    ).fetchall()
    return found[0][0] if found else None


def _copy(con, run_id: str, source: str, dataset: str) -> None:
    """SOURCE's counts and clusters as RUN_ID's; cluster ids re-derived from DATASET's rows."""
    con.execute(
        "UPDATE scores SET dup_count = s.dup_count, near_dup_count = s.near_dup_count "
        "FROM (SELECT sample_id, dup_count, near_dup_count FROM scores WHERE run_id = ?) s "
        "WHERE scores.run_id = ? AND scores.sample_id = s.sample_id",
        [source, run_id],
    )
    con.execute(
        "INSERT INTO dup_clusters SELECT ?, sample_id, cluster_id, exact_cluster_id FROM ("
        "SELECT c.sample_id, min(t.row_idx) OVER (PARTITION BY c.cluster_id) AS cluster_id, "
        "CASE WHEN c.exact_cluster_id IS NOT NULL THEN min(t.row_idx) OVER "
        "(PARTITION BY c.exact_cluster_id) END AS exact_cluster_id "
        "FROM dup_clusters c JOIN samples t ON t.dataset = ? AND t.sample_id = c.sample_id "
        "WHERE c.run_id = ?)",
        [run_id, dataset, source],
    )


def _insert(con, run_id: str, duplicates: Duplicates) -> None:
    con.register("_dup_counts", duplicates.counts)
    con.register("_dup_clusters", duplicates.clusters)
    con.execute(
        "UPDATE scores SET dup_count = d.dup_count, near_dup_count = d.near_dup_count "
        "FROM _dup_counts d WHERE scores.run_id = ? AND scores.sample_id = d.sample_id",
        [run_id],
    )
    con.execute(
        "INSERT INTO dup_clusters SELECT ?, sample_id, cluster_id, exact_cluster_id "
        "FROM _dup_clusters",
        [run_id],
    )
    con.unregister("_dup_counts")
    con.unregister("_dup_clusters")


def has_duplicates(store: Store, run_id: str) -> bool:
    """Whether every row of RUN holds both counts (its clusters are written with them)."""
    n, missing = store.query(
        "SELECT count(*), count(*) - count(near_dup_count) FROM scores WHERE run_id = ?", [run_id]
    )[0]
    return n > 0 and missing == 0


def ensure_duplicates(store: Store, run_id: str, sign: SignChunks = sign_locally) -> bool:
    """Give done run RUN_ID its duplicate counts and clusters if it lacks them (a run scored
    before they existed); True when it wrote them now, False when they were there."""
    rows = store.query("SELECT dataset, fingerprint, status FROM runs WHERE run_id = ?", [run_id])
    if not rows:
        raise InputError(f"unknown run '{run_id}' — score the dataset first")
    dataset, fingerprint, status = rows[0]
    if status != "done":
        raise InputError(f"run {run_id} is {status}, not done — finish scoring it first")
    if has_duplicates(store, run_id):
        return False
    prepared = prepare_duplicates(store, dataset, fingerprint, sign)
    with store.transaction() as con:
        change = change_since(con, dataset, fingerprint)
        if change:
            raise DatasetChanged(
                f"run {run_id} no longer matches its dataset: {change} — score it again"
            )
        missing = write_duplicates(con, run_id, prepared)
        if missing:
            raise DatasetChanged(f"{missing:,} samples of run {run_id} are not in its dataset")
    return True


# ---- what the Explore page shows of them --------------------------------------------------------


@dataclass
class DuplicateSummary:
    """How much of a run's dataset sits in duplicate clusters (samples and text bytes)."""

    n_samples: int
    n_bytes: int
    exact_samples: int  # samples with at least one byte-identical copy
    exact_bytes: int
    exact_redundant: int  # samples `--dedup exact` would prune (all but one per group)
    exact_redundant_bytes: int
    near_samples: int  # samples with at least one near duplicate (exact copies included)
    near_bytes: int
    near_redundant: int  # samples `--dedup near` would prune
    near_redundant_bytes: int
    n_exact_groups: int
    n_clusters: int


def duplicate_summary(store: Store, run_id: str) -> DuplicateSummary:
    """RUN's duplicate clusters in numbers (computing them first for a run that lacks them)."""
    ensure_duplicates(store, run_id)
    dataset = store.query("SELECT dataset FROM runs WHERE run_id = ?", [run_id])[0][0]
    row = store.query(
        "WITH d AS (SELECT d.*, s.n_bytes, "
        "row_number() OVER (PARTITION BY d.exact_cluster_id ORDER BY d.sample_id) AS exact_rank, "
        "row_number() OVER (PARTITION BY d.cluster_id ORDER BY d.sample_id) AS near_rank "
        "FROM dup_clusters d JOIN samples s ON s.dataset = ? AND s.sample_id = d.sample_id "
        "WHERE d.run_id = ?) "
        "SELECT (SELECT count(*) FROM samples WHERE dataset = ?), "
        "(SELECT coalesce(sum(n_bytes), 0) FROM samples WHERE dataset = ?), "
        "count(exact_cluster_id), coalesce(sum(n_bytes) FILTER (exact_cluster_id IS NOT NULL), 0), "
        "count(*) FILTER (exact_cluster_id IS NOT NULL AND exact_rank > 1), "
        "coalesce(sum(n_bytes) FILTER (exact_cluster_id IS NOT NULL AND exact_rank > 1), 0), "
        "count(*), coalesce(sum(n_bytes), 0), count(*) FILTER (near_rank > 1), "
        "coalesce(sum(n_bytes) FILTER (near_rank > 1), 0), "
        "count(DISTINCT exact_cluster_id), count(DISTINCT cluster_id) FROM d",
        [dataset, run_id, dataset, dataset],
    )[0]
    return DuplicateSummary(*(int(v or 0) for v in row))


def largest_clusters(
    store: Store, run_id: str, kind: str = "near", limit: int = 10, members: int = 4
) -> pd.DataFrame:
    """The LIMIT largest clusters of RUN (KIND 'near' or 'exact'), each with up to MEMBERS of its
    samples in sample-id order (the first is the one dedup keeps): cluster, size, bytes,
    sample_id, text, and for near clusters the member's exact group."""
    ensure_duplicates(store, run_id)
    column = {"near": "cluster_id", "exact": "exact_cluster_id"}[kind]
    dataset = store.query("SELECT dataset FROM runs WHERE run_id = ?", [run_id])[0][0]
    return store.query_df(
        f"WITH d AS (SELECT d.{column} AS cluster, d.sample_id, d.exact_cluster_id, s.text, "
        "s.n_bytes FROM dup_clusters d JOIN samples s ON s.dataset = ? AND s.sample_id = "
        f"d.sample_id WHERE d.run_id = ? AND d.{column} IS NOT NULL), "
        "sizes AS (SELECT cluster, count(*) AS size, sum(n_bytes) AS bytes FROM d GROUP BY "
        "cluster ORDER BY size DESC, bytes DESC, cluster LIMIT ?), "
        "ranked AS (SELECT d.*, sizes.size, sizes.bytes, row_number() OVER (PARTITION BY "
        "d.cluster ORDER BY d.sample_id) AS member FROM d JOIN sizes USING (cluster)) "
        "SELECT cluster, size, bytes, member, sample_id, exact_cluster_id, text FROM ranked "
        "WHERE member <= ? ORDER BY size DESC, bytes DESC, cluster, member",
        [dataset, run_id, limit, members],
    )


def word_diff(kept: str, other: str) -> list[tuple[str, bool]]:
    """OTHER as (piece, differs) runs of words and whitespace against KEPT: what a near
    duplicate changed, for highlighting side by side (difflib over words)."""

    def pieces(text: str) -> list[str]:
        return re.findall(r"\s+|\S+", text)

    a, b = pieces(kept), pieces(other)
    out: list[tuple[str, bool]] = []
    for op, _, _, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if j2 > j1:
            out.append(("".join(b[j1:j2]), op != "equal"))
    return out
