"""Scored runs without a model: a dataset ingested the normal way plus a finished run row and
chosen scores, so prune/export/UI tests can assert on values they control."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pyarrow as pa

from core.ingest import ingest_dataset
from core.store import Store
from tests.conftest import write_jsonl


def ingest_rows(store: Store, tmp_path: Path, rows: list[dict], name: str = "docs", **kw) -> None:
    path = write_jsonl(tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.jsonl", rows)
    ingest_dataset(store, str(path), name, **kw)


def add_done_run(
    store: Store,
    dataset: str,
    scores: dict[str, dict[str, float | None]],
    model: str = "test-model",
    model_hash: str | None = "hash-test",
    settings: dict | None = None,
) -> str:
    """A finished run of DATASET whose `scores` rows are SCORES: {sample_id: {column: value}}."""
    run_id = "run-" + uuid.uuid4().hex[:8]
    settings = settings or {"engine": "test", "window": 64, "stride": 32}
    with store.transaction() as con:
        fingerprint = con.execute(
            "SELECT fingerprint FROM datasets WHERE name = ?", [dataset]
        ).fetchall()[0][0]
        con.execute(
            "INSERT INTO runs (run_id, dataset, fingerprint, engine, model, model_hash, settings, "
            "config_key, status, n_total, n_done, created_at, finished_at) "
            "VALUES (?, ?, ?, 'test', ?, ?, ?, ?, 'done', ?, ?, now(), now())",
            [
                run_id,
                dataset,
                fingerprint,
                model,
                model_hash,
                json.dumps(settings),
                "key-" + run_id,
                len(scores),
                len(scores),
            ],
        )
        columns = sorted({c for values in scores.values() for c in values})
        table = pa.table(
            {
                "run_id": [run_id] * len(scores),
                "sample_id": list(scores),
                **{
                    c: pa.array(
                        [v.get(c) for v in scores.values()],
                        pa.int64() if c in ("n_tokens", "n_bytes") else pa.float64(),
                    )
                    for c in columns
                },
            }
        )
        con.register("_test_scores", table)
        con.execute(
            f"INSERT INTO scores ({', '.join(table.column_names)}) SELECT * FROM _test_scores"
        )
        con.unregister("_test_scores")
    return run_id


def model_scores(bits_total: float, n_tokens: int, n_bytes: int) -> dict[str, float]:
    """The stored model columns of one sample, consistent with each other."""
    return {
        "n_tokens": n_tokens,
        "n_bytes": n_bytes,
        "bits_total": bits_total,
        "bits_per_token": bits_total / n_tokens,
        "bits_per_byte": bits_total / n_bytes,
    }
