"""Sanity checks for the bundled sample corpus (sample_data/corpus.parquet)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

CORPUS = Path(__file__).resolve().parents[1] / "sample_data" / "corpus.parquet"
COLUMNS = ["id", "text", "source", "kind", "title", "licence"]
SOURCES = {"python-docs", "fortunes", "copyright", "changelog"}
ID_PREFIX = {
    "python-docs": "pydoc:",
    "fortunes": "fortune:",
    "copyright": "copyright:",
    "changelog": "changelog:",
}


@pytest.fixture(scope="module")
def table():
    assert CORPUS.is_file(), f"missing {CORPUS}; run sample_data/build_corpus.py"
    return pq.read_table(CORPUS)


def test_file_size():
    assert CORPUS.stat().st_size <= 15 * 1024 * 1024


def test_columns(table):
    assert table.column_names == COLUMNS
    for name in COLUMNS:
        assert str(table.schema.field(name).type) in ("string", "large_string"), name
        assert table.column(name).null_count == 0, name


def test_doc_count(table):
    assert 3000 <= table.num_rows <= 20000


def test_unique_ids(table):
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids)


def test_texts_not_empty(table):
    assert all(t.strip() for t in table.column("text").to_pylist())


def test_sources(table):
    sources = table.column("source").to_pylist()
    assert set(sources) == SOURCES
    for doc_id, source in zip(table.column("id").to_pylist(), sources, strict=True):
        assert doc_id.startswith(ID_PREFIX[source]), doc_id


def test_metadata_fields_filled(table):
    for name in ("kind", "title", "licence"):
        assert all(v.strip() for v in table.column(name).to_pylist()), name
