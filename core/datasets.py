"""Reading what the store knows about datasets and their samples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from core.errors import InputError
from core.store import Store, quote_ident

if TYPE_CHECKING:  # pandas only for the UI's tables: the scoring loop starts sooner
    import pandas as pd


class DatasetChanged(InputError):
    """The dataset a job reads was dropped or replaced while the job ran."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str
    format: str
    text_column: str
    id_column: str | None
    n_samples: int
    n_skipped: int
    n_replaced_bytes: int
    n_bytes: int
    columns: list[dict]
    meta_table: str
    fingerprint: str


def list_datasets(store: Store) -> pd.DataFrame:
    """One row per dataset with its sizes, newest first."""
    return store.query_df(
        "SELECT name, n_samples AS samples, round(n_bytes / 1e6, 2) AS mb, n_skipped AS skipped, "
        "n_replaced_bytes AS replaced_bytes, format, source, text_column, fingerprint, created_at "
        "FROM datasets ORDER BY created_at DESC"
    )


def dataset_names(store: Store) -> list[str]:
    return [r[0] for r in store.query("SELECT name FROM datasets ORDER BY created_at DESC")]


def get_dataset(store: Store, name: str) -> DatasetInfo:
    """The dataset's record, or an InputError naming the datasets that exist."""
    row = store.query(
        "SELECT name, source, format, text_column, id_column, n_samples, n_skipped, "
        "n_replaced_bytes, n_bytes, columns, meta_table, fingerprint FROM datasets WHERE name = ?",
        [name],
    )
    if not row:
        names = dataset_names(store)
        hint = f"datasets are: {', '.join(names)}" if names else "the store is empty"
        raise InputError(f"unknown dataset '{name}' ({hint})")
    r = list(row[0])
    r[9] = json.loads(r[9])
    return DatasetInfo(*r)


def drop_dataset(store: Store, name: str) -> None:
    """Delete dataset NAME; refused (DatasetInUse) while a live job reads it."""
    from core.jobs import check_dataset_free

    info = get_dataset(store, name)
    with store.transaction() as con:
        check_dataset_free(con, name)
        con.execute("DELETE FROM samples WHERE dataset = ?", [name])
        con.execute("DELETE FROM datasets WHERE name = ?", [name])
        con.execute(f"DROP TABLE IF EXISTS {quote_ident(info.meta_table)}")


def change_since(con, name: str, fingerprint: str) -> str | None:
    """What happened to dataset NAME since it held the content FINGERPRINT names, or None.

    Takes an open connection so that a job can check inside the transaction that commits its work.
    """
    rows = con.execute("SELECT fingerprint FROM datasets WHERE name = ?", [name]).fetchall()
    if not rows:
        return f"dataset '{name}' was dropped"
    if rows[0][0] != fingerprint:
        return f"dataset '{name}' was replaced with different content"
    return None


def texts_by_id(store: Store, name: str, ids: list[str], fingerprint: str) -> list[str]:
    """Texts of IDS, in that order, from dataset NAME as FINGERPRINT identifies it (one query).

    DatasetChanged if the dataset was dropped or replaced, rather than a KeyError halfway through.
    """
    with store.connect() as con:
        change = change_since(con, name, fingerprint)
        if change:
            raise DatasetChanged(f"{change} — ingest it again and rerun")
        con.register("_wanted_ids", pa.table({"sample_id": pa.array(ids, pa.string())}))
        try:
            found = con.execute(
                "SELECT s.sample_id, s.text FROM samples s JOIN _wanted_ids w USING (sample_id) "
                "WHERE s.dataset = ?",
                [name],
            ).fetchall()
        finally:
            con.unregister("_wanted_ids")
    by_id = dict(found)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DatasetChanged(
            f"dataset '{name}' lacks {len(missing):,} of the samples asked for (e.g. "
            f"{missing[0]!r}) — it changed while in use; rerun"
        )
    return [by_id[i] for i in ids]


def record_training_samples(
    store: Store, model_hash: str, fingerprint: str, ids_by_role: dict[str, list[str]]
) -> None:
    """Which samples of the dataset FINGERPRINT trained (role 'train') and validated ('val') the
    weights MODEL_HASH, so Explore can flag them and validation keep them out of its evaluation.
    Recording again replaces the earlier record: the same weights have one set of samples."""
    rows = [(str(i), role) for role, ids in ids_by_role.items() for i in ids]
    table = pa.table(
        {
            "model_hash": pa.array([model_hash] * len(rows), pa.string()),
            "fingerprint": pa.array([fingerprint] * len(rows), pa.string()),
            "sample_id": pa.array([r[0] for r in rows], pa.string()),
            "role": pa.array([r[1] for r in rows], pa.string()),
        }
    )
    with store.transaction() as con:
        con.execute(
            "DELETE FROM probe_samples WHERE model_hash = ? AND fingerprint = ?",
            [model_hash, fingerprint],
        )
        con.register("_training_ids", table)
        con.execute("INSERT INTO probe_samples SELECT * FROM _training_ids")
        con.unregister("_training_ids")


def sample_page(
    store: Store,
    name: str,
    contains: str | None,
    limit: int,
    offset: int,
    sample_id: str | None = None,
) -> tuple[pd.DataFrame, int]:
    """A page of samples in source order (optionally filtered), and how many match in all."""
    where = "dataset = ?"
    params: list = [name]
    if contains:
        where += " AND contains(lower(text), lower(?))"
        params.append(contains)
    if sample_id is not None:
        where += " AND sample_id = ?"
        params.append(sample_id)
    with store.connect() as con:
        total = con.execute(f"SELECT count(*) FROM samples WHERE {where}", params).fetchall()[0][0]
        df = con.execute(
            f"SELECT sample_id, n_bytes, text FROM samples WHERE {where} "
            "ORDER BY row_idx LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).df()
    return df, total


def read_texts_after(
    store: Store, name: str, after_row: int, limit: int
) -> list[tuple[int, str, str]]:
    """(row_idx, sample_id, text) for the next LIMIT samples after a row, for streaming readers."""
    return store.query(
        "SELECT row_idx, sample_id, text FROM samples WHERE dataset = ? AND row_idx > ? "
        "ORDER BY row_idx LIMIT ?",
        [name, after_row, limit],
    )
