"""Hostile input to `infoprune ingest`: each case exits 2 with one `error:` line that says what is
wrong and what to do, no traceback, and every table of the store keeps its row count. Where
DuckDB's own message would mislead (a wrong line, "not valid UTF-8" for a ragged CSV, "corrupt"
for Parquet files that differ), or where bad input used to be stored, the case is named for it."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.cli import main
from core.datasets import get_dataset
from core.ingest import ingest_dataset
from core.reader_errors import ReaderLimitError
from core.scratch import scratch_folder, sweep_store
from core.store import Store
from tests.conftest import ROOT, write_jsonl

# read_json infers a column's type from this many rows; a value past them used to go unchecked.
SAMPLE_ROWS = 20480


def snapshot(store: Store) -> list[tuple[str, int]]:
    """Every table of the store with its row count."""
    with store.connect() as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return sorted(
            (t, con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]) for t in tables
        )


@pytest.fixture(scope="module")
def kept_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kept")
    store = Store(folder / "ws.duckdb", lock_timeout=30)
    rows = [{"id": f"k{i}", "text": f"kept text {i}"} for i in range(5)]
    ingest_dataset(store, str(write_jsonl(folder / "keep.jsonl", rows)), "keep", id_column="id")
    return store.path


@pytest.fixture
def kept(tmp_path, kept_template) -> Store:
    """A store that already holds one dataset, 'keep' (a copy of one built once)."""
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    shutil.copyfile(kept_template, store.path)
    return store


def refused(capsys, store: Store, source, *extra: str, name: str = "new") -> str:
    """Ingest through the CLI expecting bad input: exit 2, exactly one `error:` line, no
    traceback, every table's row count unchanged. Returns the line."""
    before = snapshot(store)
    capsys.readouterr()
    rc = main(["ingest", str(source), "--name", name, "--db", str(store.path), *extra])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert snapshot(store) == before
    return lines[0]


def ingested(capsys, store: Store, source, *extra: str, name: str = "new") -> str:
    capsys.readouterr()
    rc = main(["ingest", str(source), "--name", name, "--db", str(store.path), *extra])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def texts(store: Store, name: str) -> list[str]:
    rows = store.query("SELECT text FROM samples WHERE dataset = ? ORDER BY row_idx", [name])
    return [r[0] for r in rows]


def lines_file(path: Path, lines: list[str], compress: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def good_rows(n: int) -> list[str]:
    return [json.dumps({"text": f"row {i}"}) for i in range(n)]


# --- 1. a broken JSON line is named by its own line number -----------------------------------


def _broken(n_lines: int, bad: int, blanks: tuple[int, ...] = ()) -> list[str]:
    lines = good_rows(n_lines)
    lines[bad - 1] = '{"text": "unterminated'
    for at in sorted(blanks, reverse=True):
        lines.insert(at - 1, "")
    return lines


@pytest.mark.parametrize(
    ("lines", "bad_line", "compress"),
    [
        (_broken(3, 1), 1, False),  # DuckDB said "record/value 2"
        (_broken(3, 2), 2, False),  # DuckDB said "line 3"
        (_broken(5, 3, blanks=(1, 2)), 5, False),  # blank lines count as lines of the file
        (_broken(20000, 15000), 15000, False),  # past the first batch
        (_broken(10, 4), 4, True),
        (['{"text": "a"}', '{"text": "b"},', '{"text": "c"}'], 2, False),  # junk after a record
    ],
    ids=["first", "second", "after-blank-lines", "late", "gzip", "trailing-comma"],
)
def test_broken_json_names_its_own_line(kept, tmp_path, capsys, lines, bad_line, compress):
    path = lines_file(tmp_path / ("d.jsonl.gz" if compress else "d.jsonl"), lines, compress)

    line = refused(capsys, kept, path)

    assert f"broken JSON at {path} line {bad_line} (" in line
    assert line.endswith("— fix or remove that line")


def test_broken_json_array_file_is_named_without_a_made_up_line(kept, tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text('[\n  {\n    "text": "a"\n  },\n  {\n    "text": "b"\n')

    line = refused(capsys, kept, path)

    assert f"broken JSON in {path} (" in line and " line " not in line


# --- 2. a ragged CSV is a CSV problem, not a UTF-8 one -----------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "where"),
    [
        ("d.csv", "id,text\n1,a,extra\n2\n", "line 2 has 3 columns, the header has 2"),
        ("d.tsv", "id\ttext\n1\ta\n2\tb\tc\n", "line 3 has 3 columns, the header has 2"),
        # DuckDB took the long row for the header and dropped the rows above it: "no rows".
        ("d.csv", "id,text\n1,a\n2,b\n3,c,d\n", "line 4 has 3 columns, the header has 2"),
        (
            "d.csv",
            "id,text\n" + "".join(f"{i},t{i}\n" for i in range(30000)) + "1,a,extra\n",
            "line 30002 has 3 columns, the header has 2",
        ),
    ],
    ids=["ragged", "tsv", "long-row-at-the-end", "late"],
)
def test_ragged_csv_names_the_line_and_the_column_counts(kept, tmp_path, capsys, name, data, where):
    path = tmp_path / name
    path.write_text(data)

    line = refused(capsys, kept, path)

    assert f"{path} {where}" in line
    assert "utf-8" not in line.lower()


def test_a_csv_value_of_the_wrong_type_past_the_sample_names_its_line(kept, tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("n,text\n" + "".join(f"{i},t{i}\n" for i in range(30000)) + "x,late\n")

    line = refused(capsys, kept, path)

    assert f"cannot parse CSV {path} line 30002:" in line and 'convert string "x"' in line


# --- 3. a record over DuckDB's size limits: which limit, its size, and how to raise it ---------


def test_csv_row_over_max_line_size(kept, tmp_path, capsys):
    big = "y" * 3_000_000
    path = tmp_path / "d.csv"
    path.write_text(f"id,text\n1,a\n2,{big}\n3,c\n")

    line = refused(capsys, kept, path)

    assert line == (
        f"error: {path}: a CSV row is larger than DuckDB's max_line_size (2,000,000 bytes) "
        "— pass --max-line-size 4194304 (or larger)"
    )
    ingested(capsys, kept, path, "--max-line-size", "4194304")
    assert texts(kept, "new") == ["a", big, "c"]


def test_json_record_over_maximum_object_size(kept, tmp_path, capsys):
    # DuckDB reads records of up to about twice maximum_object_size: 40 MB is over the default.
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "a"}, {"text": "z" * 40_000_000}])

    line = refused(capsys, kept, path)

    assert line == (
        f"error: {path}: a JSON record is larger than DuckDB's maximum_object_size "
        "(16,777,216 bytes) — pass --max-object-size 67108864 (or larger)"
    )
    ingested(capsys, kept, path, "--max-object-size", "67108864")
    assert [len(t) for t in texts(kept, "new")] == [1, 40_000_000]


@pytest.mark.parametrize("option", ["--max-line-size", "--max-object-size"])
def test_limits_must_be_positive(kept, tmp_path, capsys, option):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])

    assert f"{option} must be a positive number of bytes" in refused(
        capsys, kept, path, option, "0"
    )


def test_the_limit_error_carries_what_the_app_needs(kept, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(f"text\n{'y' * 3_000_000}\n")

    with pytest.raises(ReaderLimitError) as caught:
        ingest_dataset(kept, str(path), "new", max_line_size=1_000_000)

    exc = caught.value
    assert (exc.setting, exc.current, exc.needed) == ("max_line_size", 1_000_000, 4194304)
    assert exc.message("set the field").endswith("(1,000,000 bytes) — set the field")


def test_the_ingest_form_names_its_own_field(kept, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("INFOPRUNE_DB", str(kept.path))
    path = tmp_path / "d.csv"
    path.write_text(f"text\na\n{'y' * 3_000_000}\n")
    at = AppTest.from_file(str(ROOT / "pages" / "1_Data.py"), default_timeout=120).run()

    def field(elements, starts: str):
        return next(e for e in elements if e.label.startswith(starts))

    # The preview reads the long row already, and says which field to raise.
    field(at.text_input, "Path, glob or hub id").set_value(str(path)).run()
    assert [e.value for e in at.error] == [
        f"{path}: a CSV row is larger than DuckDB's max_line_size (2,000,000 bytes) — "
        "set “Max CSV/TSV row size in bytes” (under Options) to 4194304 or more"
    ]
    field(at.number_input, "Max CSV/TSV row size in bytes").set_value(4194304).run()
    assert not at.error, [e.value for e in at.error]
    field(at.text_input, "Name").set_value("big")
    field(at.button, "Ingest").click().run()
    assert not at.error, [e.value for e in at.error]
    assert get_dataset(kept, "big").n_samples == 2


# --- 4. Parquet files whose columns differ ---------------------------------------------------


def _parquet_pair(folder: Path, second: dict) -> Path:
    folder.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"]}), folder / "a.parquet")
    pq.write_table(pa.table(second), folder / "b.parquet")
    return folder


@pytest.mark.parametrize("as_glob", [True, False], ids=["glob", "folder"])
@pytest.mark.parametrize(
    ("second", "b_has"),
    [
        ({"id": [3], "body": ["c"]}, "(id, body)"),  # was "corrupt or truncated"
        ({"id": [3], "text": ["c"], "lang": ["en"]}, "(id, text, lang)"),  # lang was dropped
    ],
    ids=["other-column", "extra-column"],
)
def test_parquet_files_with_different_columns(kept, tmp_path, capsys, as_glob, second, b_has):
    folder = _parquet_pair(tmp_path / "parts", second)

    line = refused(capsys, kept, f"{folder}/*.parquet" if as_glob else folder)

    assert line == (
        f"error: the Parquet files have different columns: a.parquet has (id, text), "
        f"b.parquet has {b_has} — ingest them separately or make the columns match"
    )


def test_parquet_files_with_different_column_types(kept, tmp_path, capsys):
    folder = _parquet_pair(tmp_path / "parts", {"id": ["x"], "text": ["c"]})

    line = refused(capsys, kept, folder)

    assert "the Parquet files have different column types: 'id' is VARCHAR in " in line
    assert "b.parquet but BIGINT in the first file" in line


def test_parquet_files_with_columns_in_another_order_are_fine(kept, tmp_path, capsys):
    folder = _parquet_pair(tmp_path / "parts", {"text": ["c"], "id": [3]})

    ingested(capsys, kept, folder)

    assert texts(kept, "new") == ["a", "b", "c"]


# --- 5. the meta table's key cannot come from the source -------------------------------------


@pytest.mark.parametrize("column", ["__sample_id", "__SAMPLE_ID"])
def test_a_column_named_like_the_meta_key_is_refused(kept, tmp_path, capsys, column):
    path = write_jsonl(tmp_path / "d.jsonl", [{column: 7, "text": "a"}])

    line = refused(capsys, kept, path)

    assert line == f"error: column '{column}' is reserved by infoprune — rename it in the source"


# --- 6. a missing path is not looked up on the hub --------------------------------------------


@pytest.mark.parametrize("source", ["data/missing", "./nothere", "/abs/missing", "a/b/c", "~/x/y"])
def test_a_missing_path_fails_at_once(kept, tmp_path, capsys, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # 'data/missing' is in a local folder: a path, not 'user/name'
    started = time.monotonic()

    line = refused(capsys, kept, source)

    assert line == f"error: no such file or directory: {source}"
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("offline", [True, False], ids=["offline-mode", "unreachable"])
def test_a_hub_id_without_the_hub_fails_at_once(kept, capsys, monkeypatch, offline):
    if not offline:
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.delenv("HF_DATASETS_OFFLINE")
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    started = time.monotonic()

    line = refused(capsys, kept, "someone/some-dataset")

    assert line.startswith(
        "error: 'someone/some-dataset' is not a local file or folder, and the Hugging Face hub "
        "cannot be reached to load it as a dataset ("
    )
    assert ("HF_HUB_OFFLINE is set" in line) == offline
    assert line.endswith("— pass a local path")
    assert time.monotonic() - started < 10


# --- 7. a text value that is not text, wherever it is ----------------------------------------


@pytest.mark.parametrize(
    ("value", "word"),
    [({"nested": 1}, "a JSON object"), ([1, 2], "a JSON array"), (5, "a number")],
    ids=["object", "array", "number"],
)
@pytest.mark.parametrize("row", [SAMPLE_ROWS + 100, 1], ids=["past-the-sample", "in-the-sample"])
def test_a_text_value_that_is_not_text_is_refused(kept, tmp_path, capsys, value, word, row):
    rows = [{"text": f"row {i}"} for i in range(max(row + 10, 50))]
    rows[row]["text"] = value
    path = write_jsonl(tmp_path / "d.jsonl", rows)

    line = refused(capsys, kept, path)

    assert line == (
        f"error: column 'text' holds {word} at row {row}, not text — fix that row or pass "
        "--text-column with a text column"
    )


def test_json_text_is_stored_exactly_when_read_strictly(kept, tmp_path, capsys):
    strings = ['q"uo\\te', "nul\x00byte", "emoji 🙂 and \ud7ff", "  ", "", "tab\tnl\ncr\r", "/"]
    rows = [{"text": s} for s in strings] + [{"text": None}, {"other": 1}]
    rows += [{"text": f"filler {i}"} for i in range(SAMPLE_ROWS)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)

    ingested(capsys, kept, path)

    stored = texts(kept, "new")
    assert stored[: len(strings) - 2] == [s for s in strings if s.strip()]
    assert len(stored) == len(strings) - 2 + SAMPLE_ROWS


# --- 8. nothing left behind by a killed ingest --------------------------------------------------


@pytest.mark.slow
def test_a_killed_ingest_leaves_only_what_a_sweep_removes(kept, tmp_path, capsys):
    before = snapshot(kept)
    path = tmp_path / "big.jsonl"
    n_rows = 120_000
    body = "word " * 100
    with open(path, "wb") as f:
        # Invalid UTF-8 in the first row: the repair path first writes a whole repaired copy.
        f.write(b'{"id": 0, "text": "bad \xff byte"}\n')
        f.write("".join(f'{{"id": {i}, "text": "{body}{i}"}}\n' for i in range(1, n_rows)).encode())
    assert path.stat().st_size > 60_000_000
    scratch = scratch_folder(kept.path)

    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "ingest", str(path), "--name", "big"]
        + ["--db", str(kept.path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Killed once both temporaries exist: the repaired copy and the metadata spill.
        deadline = time.monotonic() + 60
        while proc.poll() is None and not (
            any(scratch.glob("*/utf8-*")) and any(scratch.glob("*/meta.arrows"))
        ):
            assert time.monotonic() < deadline, "no temporaries in the store's scratch folder"
            time.sleep(0.01)
        assert proc.poll() is None, "the ingest ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)

    assert snapshot(kept) == before
    assert [p.name for p in scratch.iterdir()], "the killed ingest left nothing to sweep"
    sweep_store(kept.path)
    assert list(scratch.iterdir()) == []
    assert list(kept.path.parent.glob("infoprune-ingest-*")) == []

    ingested(capsys, kept, path, name="big")
    info = get_dataset(kept, "big")
    assert (info.n_samples, info.n_replaced_bytes) == (n_rows, 1)
    assert dict(snapshot(kept))["samples"] == dict(before)["samples"] + n_rows


# --- already handled: a regression net ---------------------------------------------------------


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _truncated_gz(tmp: Path) -> Path:
    data = "".join(json.dumps({"text": f"row {i} " + "x" * 200}) + "\n" for i in range(3000))
    path = tmp / "d.jsonl.gz"
    path.write_bytes(_cut(gzip.compress(data.encode())))
    return path


def _truncated_zst(tmp: Path) -> Path:
    import zstandard

    data = "".join(json.dumps({"text": f"row {i} " + "x" * 200}) + "\n" for i in range(3000))
    path = tmp / "d.jsonl.zst"
    path.write_bytes(_cut(zstandard.compress(data.encode())))
    return path


def _junk(tmp: Path) -> Path:
    path = tmp / "d.jsonl"
    path.write_bytes(bytes(range(256)) * 40)
    return path


def _jsonl(rows: list[dict]):
    return lambda tmp: write_jsonl(tmp / "d.jsonl", rows)


REGRESSIONS = {
    "truncated gzip": (_truncated_gz, [], "truncated or corrupt compressed file"),
    "truncated zstd": (_truncated_zst, [], "truncated or corrupt compressed file"),
    "binary junk named .jsonl": (_junk, [], "broken JSON at"),
    "nested JSON text": (
        _jsonl([{"text": {"a": 1}}, {"text": {"a": 2}}]),
        [],
        "column 'text' holds struct<a: int64>, not text",
    ),
    "int text column": (
        _jsonl([{"text": 1}, {"text": 2}]),
        [],
        "column 'text' holds int64, not text",
    ),
    "duplicate ids": (
        _jsonl([{"id": 1, "text": "a"}, {"id": 1, "text": "b"}]),
        ["--id-column", "id"],
        "id column 'id' is not unique (repeated: '1')",
    ),
    "null id": (
        _jsonl([{"id": 1, "text": "a"}, {"id": None, "text": "b"}]),
        ["--id-column", "id"],
        "id column 'id' is empty at row 1",
    ),
}


@pytest.mark.parametrize("case", list(REGRESSIONS))
def test_bad_input_stays_refused(kept, tmp_path, capsys, case):
    make, extra, expected = REGRESSIONS[case]

    line = refused(capsys, kept, make(tmp_path), *extra)

    assert expected in line


@pytest.mark.parametrize(
    "name", ["", "../x", "a b", "x'; DROP TABLE samples; --", 'x"; DROP TABLE datasets; --']
)
def test_bad_dataset_names_are_refused(kept, tmp_path, capsys, name):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])

    line = refused(capsys, kept, path, name=name)

    assert f"dataset name {name!r} is not valid" in line


def test_csv_text_with_embedded_newlines_and_quotes_is_stored_exactly(kept, tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_bytes(b'id,text\n1,"line one\nline two"\n2,"a ""quoted"" word\r\nx"\n3,plain\n')

    ingested(capsys, kept, path, "--id-column", "id")

    assert texts(kept, "new") == ["line one\nline two", 'a "quoted" word\r\nx', "plain"]
