"""Hostile sources that used to ingest wrong or fail with a misleading line: column names that
differ only in case, lines that are not JSON objects, dataset names with a final newline, and
the app's wording for what to choose on the Data page."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.cli import main
from core.errors import InputError
from core.ingest import check_dataset_name, ingest_dataset, preview_source
from core.store import Store
from tests.conftest import write_jsonl


@pytest.fixture
def kept(tmp_path) -> Store:
    """A store that already holds one dataset, 'keep', which no refused ingest may touch."""
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_dataset(store, str(write_jsonl(tmp_path / "keep.jsonl", [{"text": "kept"}])), "keep")
    return store


def tables(store: Store) -> list[tuple[str, int]]:
    """Every table of the store with its row count."""
    with store.connect() as con:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return sorted(
            (t, con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]) for t in names
        )


def refused(capsys, store: Store, source, *extra: str, name: str = "new") -> str:
    """Ingest through the CLI expecting bad input: exit 2, one `error:` line, nothing stored."""
    before = tables(store)
    capsys.readouterr()
    rc = main(["ingest", str(source), "--name", name, "--db", str(store.path), *extra])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert tables(store) == before
    return lines[0]


def meta_rows(store: Store, name: str) -> list[dict]:
    """The metadata columns of dataset NAME as stored, one dict a row."""
    table = store.query("SELECT meta_table FROM datasets WHERE name = ?", [name])[0][0]
    with store.connect() as con:
        cur = con.execute(f'SELECT * EXCLUDE (__sample_id) FROM "{table}"')
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


# --- 1. column names that differ only in case --------------------------------------------------


def _jsonl(folder: Path) -> Path:
    return write_jsonl(folder / "d.jsonl", [{"text": "a", "Text": "b"}])


def _csv(folder: Path) -> Path:
    (folder / "d.csv").write_text("text,Text\na,b\n")
    return folder / "d.csv"


def _tsv_gz(folder: Path) -> Path:
    (folder / "d.tsv.gz").write_bytes(gzip.compress(b"text\tTEXT\na\tb\n"))
    return folder / "d.tsv.gz"


def _parquet(folder: Path) -> Path:
    pq.write_table(pa.table({"text": ["x"], "a": [1], "A": [2]}), folder / "d.parquet")
    return folder / "d.parquet"


def _jsonl_glob(folder: Path) -> str:
    # Each file alone is fine; read together, DuckDB renames the second file's 'M'.
    write_jsonl(folder / "a.jsonl", [{"text": "a", "m": 1}])
    write_jsonl(folder / "b.jsonl", [{"text": "b", "M": 2}])
    return str(folder / "*.jsonl")


def _saved(folder: Path) -> Path:
    import datasets

    datasets.Dataset.from_dict({"text": ["x"], "a": [1], "A": [2]}).save_to_disk(folder / "hf")
    return folder / "hf"


@pytest.mark.parametrize(
    ("make", "first", "second"),
    [
        (_jsonl, "text", "Text"),
        (_csv, "text", "Text"),
        (_tsv_gz, "text", "TEXT"),
        (_parquet, "a", "A"),
        (_jsonl_glob, "m", "M"),
        (_saved, "a", "A"),
    ],
    ids=["jsonl", "csv", "tsv.gz", "parquet", "jsonl-glob", "save_to_disk"],
)
def test_columns_that_differ_only_in_case_are_refused(kept, tmp_path, capsys, make, first, second):
    source = make(tmp_path)

    line = refused(capsys, kept, source)

    assert line == (
        f"error: {source}: columns '{first}' and '{second}' differ only in case — DuckDB "
        "cannot keep both: rename one"
    )
    with pytest.raises(InputError, match=f"columns '{first}' and '{second}' differ only in case"):
        preview_source(kept, str(source))


def test_a_csv_header_with_a_name_twice_is_refused(kept, tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("text,text\na,b\n")

    assert refused(capsys, kept, path) == (
        f"error: {path}: two columns are named 'text' — DuckDB cannot keep both: rename one"
    )


def test_names_like_a_renamed_column_but_distinct_are_kept(store, tmp_path):
    # 'text_1' looks like DuckDB's rename of a second 'text'; 'É' and 'é' DuckDB keeps apart.
    rows = [{"text": "a", "Text_1": "b", "É": "c", "é": "d"}]
    for path in (write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "d.csv"):
        if path.suffix == ".csv":
            path.write_text("text,Text_1,É,é\na,b,c,d\n")
        ingest_dataset(store, str(path), path.suffix[1:])
        assert meta_rows(store, path.suffix[1:]) == [{"Text_1": "b", "É": "c", "é": "d"}]


# --- 2. a dataset name with a final newline ----------------------------------------------------


@pytest.mark.parametrize("name", ["nl\n", "nl\n\n", "\nnl", "a b"])
def test_a_dataset_name_with_a_newline_is_refused(kept, tmp_path, capsys, name):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])

    line = refused(capsys, kept, path, name=name)

    assert line == (
        f"error: dataset name {name!r} is not valid — use letters, digits, '_', '-', '.' (max 128)"
    )
    assert check_dataset_name("ok.name-1") == "ok.name-1"


# --- 3. the app's words: the column selects are above the error --------------------------------


def _parquet_of_numbers(folder: Path) -> Path:
    pq.write_table(pa.table({"text": [1]}), folder / "d.parquet")
    return folder / "d.parquet"


@pytest.mark.parametrize(
    ("make", "extra", "cli"),
    [
        (lambda f: write_jsonl(f / "d.jsonl", [{"words": "a"}]), {}, "pass --text-column NAME"),
        (
            lambda f: write_jsonl(f / "d.jsonl", [{"text": "a"}, {"text": [1]}]),
            {},
            "pass --text-column with a text column",
        ),
        (_parquet_of_numbers, {}, "pass --text-column with a text column"),
        (
            lambda f: write_jsonl(f / "d.jsonl", [{"text": "a", "id": 1}, {"text": "b", "id": 1}]),
            {"id_column": "id"},
            "pick a unique --id-column",
        ),
    ],
    ids=["no-text-column", "not-text-in-json", "not-text-type", "ids-not-unique"],
)
def test_the_app_asks_for_the_column_above_the_message(store, tmp_path, make, extra, cli):
    # On the Data page the error is drawn under the Ingest button, the column selects above it.
    with pytest.raises(InputError) as err:
        ingest_dataset(store, str(make(tmp_path)), "new", **extra)

    assert cli in str(err.value)
    assert "column above" in err.value.ui_message
    assert "below" not in err.value.ui_message and "--" not in err.value.ui_message


# --- 4. a JSONL line that is not an object -----------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "bad"),
    [
        (['{"text": "ok"}', "[1, 2]"], 2),
        (['{"text": "ok"}', "42"], 2),
        (['{"text": "ok"}', "", "  ", '{"text": "ok 2"}', '"just a string"', '{"text": "x"}'], 5),
        (["[1, 2]", "[3]"], 1),
    ],
    ids=["array", "number", "after-blank-lines", "every-line"],
)
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_a_jsonl_line_that_is_not_an_object_is_named(kept, tmp_path, capsys, lines, bad, compress):
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / ("d.jsonl.gz" if compress else "d.jsonl")
    path.write_bytes(gzip.compress(data) if compress else data)

    line = refused(capsys, kept, path)

    assert line == (
        f"error: {path} line {bad} is not a JSON object (each JSONL line must be one) — fix or "
        "remove that line"
    )
    with pytest.raises(InputError, match=f"line {bad} is not a JSON object"):
        preview_source(kept, str(path))


def test_a_json_array_with_a_value_that_is_not_an_object_is_named(kept, tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "ok"}, 42]))

    assert refused(capsys, kept, path) == (
        f"error: {path}: record 2 is not a JSON object (each record must be one) — fix or remove it"
    )


def test_objects_whose_only_key_is_json_still_ingest(store, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"json": "first"}, {"json": "second"}])

    report = ingest_dataset(store, str(path), "new", text_column="json")

    assert (report.n_samples, report.text_column) == (2, "json")
