"""Ingest: every source format, exact text, repair/skip counts, metadata, and bad input that
must fail with one line on stderr without touching what the store already holds."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import core.sources
from core.cli import main as cli_main
from core.datasets import get_dataset, list_datasets
from core.errors import InputError
from core.ingest import default_dataset_name, ingest_dataset, preview_source
from core.store import Store

ROOT = Path(__file__).resolve().parent.parent

# Texts that a normalising reader would change: edge spaces, CRLF, tabs, quotes, non-ASCII.
TEXTS = [
    "  leading and trailing spaces  ",
    "windows\r\nline endings\r\n",
    'tabs\tand "quotes", commas; semicolons',
    "ünïcödé 日本語 🙂 zero\u200bwidth",
    "ends with a newline\n",
    "plain",
]
ROWS = [
    {"id": f"doc-{i}", "text": t, "lang": ["en", "de", "ja"][i % 3], "n": i * 10, "score": i / 4}
    for i, t in enumerate(TEXTS)
]
META = ["id", "lang", "n", "score"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def write_txt_folder(folder: Path, texts: list[str]) -> Path:
    folder.mkdir()
    for i, t in enumerate(texts):
        (folder / f"{i:03d}.txt").write_bytes(t.encode())
    return folder


def samples(store: Store, name: str) -> list[tuple[str, int, str]]:
    return store.query(
        "SELECT sample_id, row_idx, text FROM samples WHERE dataset = ? ORDER BY row_idx", [name]
    )


def meta(store: Store, name: str) -> tuple[list[tuple[str, str]], list[tuple]]:
    """(column, DuckDB type) of the dataset's meta table, and its rows in source order."""
    table = get_dataset(store, name).meta_table
    cols = [(r[0], r[1]) for r in store.query(f"DESCRIBE {table}")]
    rows = store.query(
        f"SELECT m.* FROM {table} m JOIN samples s ON s.sample_id = m.__sample_id "
        "AND s.dataset = ? ORDER BY s.row_idx",
        [name],
    )
    return cols, rows


def state(store: Store) -> dict:
    """Per dataset name: (recorded count, stored sample rows, fingerprint); fails on orphans."""
    with store.connect() as con:
        datasets = con.execute("SELECT name, n_samples, fingerprint, meta_table FROM datasets")
        datasets = datasets.fetchall()
        counts = con.execute("SELECT dataset, count(*) FROM samples GROUP BY dataset").fetchall()
        tables = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'meta\\_%' ESCAPE '\\'"
        ).fetchall()
    assert sorted(t[0] for t in tables) == sorted(d[3] for d in datasets), "orphan meta table"
    assert sorted(c[0] for c in counts) == sorted(d[0] for d in datasets), "orphan samples"
    counts = dict(counts)
    return {d[0]: (d[1], counts[d[0]], d[2]) for d in datasets}


# --- every format -----------------------------------------------------------------------------


def _jsonl_gz(tmp: Path) -> Path:
    path = tmp / "d.jsonl.gz"
    path.write_bytes(gzip.compress(write_jsonl(tmp / "plain.jsonl", ROWS).read_bytes()))
    return path


def _jsonl_zst(tmp: Path) -> Path:
    import zstandard

    path = tmp / "d.jsonl.zst"
    path.write_bytes(zstandard.compress(write_jsonl(tmp / "plain.jsonl", ROWS).read_bytes()))
    return path


def _json_array(tmp: Path) -> Path:
    path = tmp / "d.json"
    path.write_text(json.dumps(ROWS, ensure_ascii=False, indent=2), "utf-8")
    return path


def _parquet_parts(folder: Path) -> None:
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS[:4]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[4:]), folder / "part-1.parquet")


def _parquet_glob(tmp: Path) -> str:
    _parquet_parts(tmp / "parts")
    return str(tmp / "parts" / "*.parquet")


def _parquet_dir(tmp: Path) -> Path:
    _parquet_parts(tmp / "parts")
    return tmp / "parts"


def _parquet_file(tmp: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp / "d.parquet")
    return tmp / "d.parquet"


def _save_to_disk(tmp: Path) -> Path:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp / "hf"))
    return tmp / "hf"


FORMATS = {
    "jsonl": (lambda tmp: write_jsonl(tmp / "d.jsonl", ROWS), "json"),
    "json-array": (_json_array, "json"),
    "jsonl.gz": (_jsonl_gz, "json"),
    "jsonl.zst": (_jsonl_zst, "json"),
    "parquet-file": (_parquet_file, "parquet"),
    "parquet-dir": (_parquet_dir, "parquet"),
    "parquet-glob": (_parquet_glob, "parquet"),
    "csv": (lambda tmp: write_csv(tmp / "d.csv", ROWS), "csv"),
    "tsv": (lambda tmp: write_csv(tmp / "d.tsv", ROWS, "\t"), "tsv"),
    "save_to_disk": (_save_to_disk, "hf-disk"),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_keeps_text_ids_and_columns_exactly(store, tmp_path, fmt):
    make, kind = FORMATS[fmt]
    report = ingest_dataset(store, str(make(tmp_path)), "d", id_column="id")

    assert (report.n_samples, report.n_skipped, report.n_replaced_bytes) == (len(ROWS), 0, 0)
    assert report.n_bytes == sum(len(t.encode()) for t in TEXTS)
    assert samples(store, "d") == [(r["id"], i, r["text"]) for i, r in enumerate(ROWS)]
    info = get_dataset(store, "d")
    assert (info.format, info.text_column, info.id_column) == (kind, "text", "id")
    cols, rows = meta(store, "d")
    assert [c for c, _ in cols] == ["__sample_id", *META]
    assert rows == [(r["id"], *(r[c] for c in META)) for r in ROWS]


def test_txt_folder_one_sample_per_file_bytes_unchanged(store, tmp_path):
    folder = write_txt_folder(tmp_path / "txt", TEXTS)
    (folder / "notes.md").write_text("not a sample")

    report = ingest_dataset(store, str(folder), "t")

    assert report.n_samples == len(TEXTS)
    assert samples(store, "t") == [(str(i), i, t) for i, t in enumerate(TEXTS)]
    assert meta(store, "t")[1] == [(str(i), f"{i:03d}.txt") for i in range(len(TEXTS))]
    assert get_dataset(store, "t").format == "txt-folder"


def _dataset_dict(tmp: Path) -> Path:
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(ROWS[:4]),
            "validation": datasets.Dataset.from_list(ROWS[4:]),
        }
    ).save_to_disk(str(tmp / "dd"))
    return tmp / "dd"


def test_dataset_dict_split(store, tmp_path):
    path = str(_dataset_dict(tmp_path))

    ingest_dataset(store, path, "val", split="validation")
    ingest_dataset(store, path, "default")  # no --split: the train split

    assert [s[2] for s in samples(store, "val")] == TEXTS[4:]
    assert [s[2] for s in samples(store, "default")] == TEXTS[:4]
    with pytest.raises(InputError, match="no split 'test'; splits are train, validation"):
        ingest_dataset(store, path, "x", split="test")
    with pytest.raises(InputError, match="without splits — drop --split"):
        ingest_dataset(store, str(_save_to_disk(tmp_path)), "x", split="train")


# --- columns ----------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["text", "content", "Content", "body", "raw_content"])
def test_text_column_is_detected(store, tmp_path, column):
    path = write_jsonl(tmp_path / "d.jsonl", [{"title": "t", column: "hello"}])

    ingest_dataset(store, str(path), "d")

    assert get_dataset(store, "d").text_column == column
    assert samples(store, "d") == [("0", 0, "hello")]


def test_explicit_text_and_id_columns(store, tmp_path):
    rows = [{"key": 100 + i, "text": "ignored", "summary": f"s{i}"} for i in range(3)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)

    ingest_dataset(store, str(path), "d", text_column="summary", id_column="key")

    assert samples(store, "d") == [("100", 0, "s0"), ("101", 1, "s1"), ("102", 2, "s2")]
    cols, meta_rows = meta(store, "d")
    assert cols == [("__sample_id", "VARCHAR"), ("key", "BIGINT"), ("text", "VARCHAR")]
    assert meta_rows[0] == ("100", 100, "ignored")


def test_meta_columns_keep_types_and_order(store, tmp_path):
    import datetime as dt

    table = pa.table(
        {
            "when": pa.array([dt.datetime(2024, 1, i + 1) for i in range(3)], pa.timestamp("us")),
            "n": pa.array([3, 1, 2], pa.int32()),
            "text": ["a", "  ", "c"],
            "tags": pa.array([["x"], [], ["y", "z"]], pa.list_(pa.string())),
            "score": [0.5, None, 1.5],
            "ok": [True, False, None],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")

    ingest_dataset(store, str(tmp_path / "d.parquet"), "d")

    cols, rows = meta(store, "d")
    assert cols == [
        ("__sample_id", "VARCHAR"),
        ("when", "TIMESTAMP"),
        ("n", "INTEGER"),
        ("tags", "VARCHAR[]"),
        ("score", "DOUBLE"),
        ("ok", "BOOLEAN"),
    ]
    # The whitespace-only row is skipped in both tables; the rest keep source order.
    assert rows == [
        ("0", dt.datetime(2024, 1, 1), 3, ["x"], 0.5, True),
        ("2", dt.datetime(2024, 1, 3), 2, ["y", "z"], 1.5, None),
    ]
    assert [c["name"] for c in get_dataset(store, "d").columns] == list(table.column_names)


# --- skipping and repairing -------------------------------------------------------------------


BLANKS = [None, "", "   ", "\t\r\n", "\u00a0\u3000\u2003", "\u2028"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_null_empty_and_whitespace_texts_are_skipped_and_counted(store, tmp_path, fmt):
    texts = ["first", *BLANKS, " x ", "\u200b"]  # a zero-width space is not whitespace
    rows = [{"text": t, "i": i} for i, t in enumerate(texts)]
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "d.jsonl", rows)
    else:
        path = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)

    report = ingest_dataset(store, str(path), "d")

    assert (report.n_samples, report.n_skipped, report.n_rows_read) == (3, 6, 9)
    assert samples(store, "d") == [("0", 0, "first"), ("7", 7, " x "), ("8", 8, "\u200b")]
    assert get_dataset(store, "d").n_skipped == 6
    assert [r[1] for r in meta(store, "d")[1]] == [0, 7, 8]


# (bytes, invalid bytes in them): Python's decoder replaces a truncated sequence with one U+FFFD.
BAD_UTF8 = [(b"ok \xff\xfe end", 2), (b"\xc3(", 1), (b"cut \xe2\x82", 2), (b"fine \xc3\xa9", 0)]


def _bad_utf8_jsonl(tmp: Path) -> Path:
    path = tmp / "d.jsonl"
    path.write_bytes(b"".join(b'{"text": "' + b + b'"}\n' for b, _ in BAD_UTF8))
    return path


def _bad_utf8_gz(tmp: Path) -> Path:
    path = tmp / "d.jsonl.gz"
    path.write_bytes(gzip.compress(_bad_utf8_jsonl(tmp).read_bytes()))
    return path


def _bad_utf8_csv(tmp: Path) -> Path:
    path = tmp / "d.csv"
    path.write_bytes(b"text,k\n" + b"".join(b + b",1\n" for b, _ in BAD_UTF8))
    return path


def _bad_utf8_txt(tmp: Path) -> Path:
    folder = tmp / "txt"
    folder.mkdir()
    for i, (b, _) in enumerate(BAD_UTF8):
        (folder / f"{i}.txt").write_bytes(b)
    return folder


def _bad_utf8_parquet_binary(tmp: Path) -> Path:
    path = tmp / "d.parquet"
    pq.write_table(pa.table({"text": pa.array([b for b, _ in BAD_UTF8], pa.binary())}), path)
    return path


@pytest.mark.parametrize(
    "make", [_bad_utf8_jsonl, _bad_utf8_gz, _bad_utf8_csv, _bad_utf8_txt, _bad_utf8_parquet_binary]
)
def test_invalid_utf8_is_replaced_and_counted_exactly(store, tmp_path, make):
    report = ingest_dataset(store, str(make(tmp_path)), "d")

    assert report.n_replaced_bytes == sum(n for _, n in BAD_UTF8) == 5
    assert [s[2] for s in samples(store, "d")] == [
        "ok \ufffd\ufffd end",
        "\ufffd(",
        "cut \ufffd",
        "fine é",
    ]
    assert get_dataset(store, "d").n_replaced_bytes == 5


# --- limit, replace, fingerprint --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet-dir", "save_to_disk"])
def test_limit_reads_the_first_rows(store, tmp_path, fmt):
    report = ingest_dataset(store, str(FORMATS[fmt][0](tmp_path)), "d", limit=4)

    assert report.n_rows_read == 4
    assert [s[2] for s in samples(store, "d")] == TEXTS[:4]


def test_limit_on_a_txt_folder_and_past_the_end(store, tmp_path):
    folder = str(write_txt_folder(tmp_path / "txt", TEXTS))

    assert ingest_dataset(store, folder, "a", limit=2).n_samples == 2
    assert ingest_dataset(store, folder, "b", limit=1000).n_samples == len(TEXTS)


def test_replace_swaps_the_dataset_and_drops_its_old_meta(store, tmp_path):
    ingest_dataset(store, str(write_jsonl(tmp_path / "a.jsonl", ROWS)), "d")
    old_meta = get_dataset(store, "d").meta_table

    with pytest.raises(InputError, match="already exists — pass --replace"):
        ingest_dataset(store, str(write_jsonl(tmp_path / "b.jsonl", [{"text": "new"}])), "d")
    assert len(samples(store, "d")) == len(ROWS)

    ingest_dataset(store, str(tmp_path / "b.jsonl"), "d", replace=True)

    assert samples(store, "d") == [("0", 0, "new")]
    assert get_dataset(store, "d").meta_table != old_meta
    state(store)  # no orphan meta table


def _fingerprint(store: Store, source: Path, name: str, **kw) -> str:
    ingest_dataset(store, str(source), name, **kw)
    return get_dataset(store, name).fingerprint


@pytest.mark.parametrize("fmt", ["jsonl", "parquet-dir", "save_to_disk", "txt"])
def test_fingerprint_does_not_depend_on_batch_size(store, tmp_path, monkeypatch, fmt):
    rows = [{"id": f"r{i}", "text": f"text {i} " * (i % 7 + 1)} for i in range(50)]
    rows[3]["text"] = "   "  # a skipped row shifts batches without changing the content
    if fmt == "txt":
        source = write_txt_folder(tmp_path / "txt", [r["text"] for r in rows])
    elif fmt == "jsonl":
        source = write_jsonl(tmp_path / "d.jsonl", rows)
    elif fmt == "parquet-dir":
        (tmp_path / "p").mkdir()
        for k in range(0, 50, 20):
            pq.write_table(
                pa.Table.from_pylist(rows[k : k + 20]), tmp_path / "p" / f"{k:02}.parquet"
            )
        source = tmp_path / "p"
    else:
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
        source = tmp_path / "hf"

    batches = []
    whole = _fingerprint(store, source, "whole", progress=batches.append)
    monkeypatch.setattr(core.sources, "BATCH_ROWS", 16)  # txt folders read BATCH_ROWS // 8
    small = []
    split = _fingerprint(store, source, "split", progress=small.append)

    assert len(small) > len(batches)  # the batches really were split differently
    assert whole == split


def test_fingerprint_changes_with_text_and_ids(store, tmp_path):
    rows = [{"id": f"r{i}", "text": f"text {i}"} for i in range(5)]
    base = _fingerprint(store, write_jsonl(tmp_path / "a.jsonl", rows), "a", id_column="id")
    rows[2]["text"] = "text 2 "
    text = _fingerprint(store, write_jsonl(tmp_path / "c.jsonl", rows), "c", id_column="id")
    rows[2]["id"] = "r2b"
    ids = _fingerprint(store, write_jsonl(tmp_path / "d.jsonl", rows), "d", id_column="id")
    # Moving a byte between two texts keeps the concatenation but must change the fingerprint.
    moved = _fingerprint(
        store, write_jsonl(tmp_path / "e.jsonl", [{"text": "ab"}, {"text": "c"}]), "e"
    )
    other = _fingerprint(
        store, write_jsonl(tmp_path / "f.jsonl", [{"text": "a"}, {"text": "bc"}]), "f"
    )

    assert len({base, text, ids}) == 3
    assert moved != other


# --- bad input through the CLI ----------------------------------------------------------------


def _good_then_truncated_gz(tmp: Path) -> Path:
    rows = [{"text": f"row {i} " + "x" * 200} for i in range(3000)]
    data = gzip.compress(write_jsonl(tmp / "big.jsonl", rows).read_bytes())
    path = tmp / "trunc.jsonl.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _truncated_zst(tmp: Path) -> Path:
    import zstandard

    rows = [{"text": f"row {i} " + "y" * 200} for i in range(3000)]
    data = zstandard.compress(write_jsonl(tmp / "big.jsonl", rows).read_bytes())
    path = tmp / "trunc.jsonl.zst"
    path.write_bytes(data[: len(data) // 2])
    return path


def _cut_at_a_block_boundary(suffix: str):
    """A compressed file cut after a flushed block: every byte decodes, only the end is missing."""

    def make(tmp: Path) -> Path:
        import zlib

        import zstandard

        lines = [json.dumps({"text": f"row {i}"}).encode() + b"\n" for i in range(100)]
        if suffix == ".zst":
            comp = zstandard.ZstdCompressor().compressobj()
            flush = lambda: comp.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)  # noqa: E731
        else:
            comp = zlib.compressobj(wbits=31)
            flush = lambda: comp.flush(zlib.Z_SYNC_FLUSH)  # noqa: E731
        data = b"".join(comp.compress(line) for line in lines[:50]) + flush()
        path = tmp / f"cut.jsonl{suffix}"
        path.write_bytes(data)
        return path

    return make


def _truncated_parquet(tmp: Path) -> Path:
    data = _parquet_file(tmp).read_bytes()
    path = tmp / "bad.parquet"
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage_parquet(tmp: Path) -> Path:
    path = tmp / "bad.parquet"
    path.write_bytes(b"PAR1" + os.urandom(2000) + b"PAR1")
    return path


def _broken_json_late(tmp: Path) -> Path:
    # Past the first batch, so some rows were already inserted when the error comes.
    lines = [json.dumps({"text": f"row {i}"}) for i in range(20000)]
    lines[15000] = '{"text": "unterminated'
    path = tmp / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write(name: str, data: bytes | str):
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    return make


BAD_INPUTS = {
    "missing file": (lambda tmp: tmp / "nope.jsonl", [], "no such file"),
    "missing folder in glob": (lambda tmp: f"{tmp}/nope/*.parquet", [], "no files match"),
    "unknown format": (_write("d.xml", "<text>hi</text>"), [], "unknown format '.xml'"),
    "empty file": (_write("d.jsonl", ""), [], "is empty"),
    "empty gzip": (_write("d.jsonl.gz", gzip.compress(b"")), [], "holds no rows"),
    "blank lines only": (_write("d.jsonl", "\n\n"), [], "holds no rows"),
    "header-only csv": (_write("d.csv", "text,n\n"), [], "holds no rows"),
    "empty folder": (lambda tmp: tmp, [], "holds no .parquet or .txt"),
    "no text column": (
        _write("d.jsonl", '{"title": "a", "url": "u"}\n'),
        [],
        "no text column found; columns are: title, url — pass --text-column",
    ),
    "unknown --text-column": (
        _write("d.jsonl", '{"text": "a"}\n'),
        ["--text-column", "body"],
        "text column 'body' not found; columns are: text",
    ),
    "text column is a number": (
        _write("d.jsonl", '{"text": 1}\n{"text": 2}\n'),
        [],
        "column 'text' holds int64, not text",
    ),
    "text column is a list": (
        _write("d.jsonl", '{"text": ["a", "b"]}\n'),
        [],
        "column 'text' holds list",
    ),
    "all texts blank": (
        _write("d.jsonl", '{"text": " "}\n{"text": null}\n'),
        [],
        "no samples with text: all 2 rows",
    ),
    "broken json line": (
        _write("d.jsonl", '{"text": "a"}\n{"text": "b"\n{"text": "c"}\n'),
        [],
        "broken JSON at",
    ),
    "broken json after the first batch": (_broken_json_late, [], "broken JSON at"),
    "truncated gzip": (_good_then_truncated_gz, [], "truncated or corrupt compressed file"),
    "truncated zstd": (_truncated_zst, [], "truncated or corrupt compressed file"),
    "zstd cut at a block boundary": (
        _cut_at_a_block_boundary(".zst"),
        [],
        "truncated or corrupt compressed file",
    ),
    "gzip cut at a block boundary": (
        _cut_at_a_block_boundary(".gz"),
        [],
        "truncated or corrupt compressed file",
    ),
    "truncated parquet": (_truncated_parquet, [], "not a readable Parquet file"),
    "garbage parquet": (_garbage_parquet, [], "Parquet"),
    "duplicate ids": (
        _write(
            "d.jsonl", '{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n{"id": 1, "text": "c"}\n'
        ),
        ["--id-column", "id"],
        "id column 'id' is not unique (repeated: '1')",
    ),
    "null id": (
        _write("d.jsonl", '{"id": 1, "text": "a"}\n{"id": null, "text": "b"}\n'),
        ["--id-column", "id"],
        "id column 'id' is empty at row 1",
    ),
    "unknown --id-column": (
        _write("d.jsonl", '{"text": "a"}\n'),
        ["--id-column", "key"],
        "id column 'key' not found",
    ),
    "missing split": (_dataset_dict, ["--split", "test"], "no split 'test'"),
    "bad --limit": (_write("d.jsonl", '{"text": "a"}\n'), ["--limit", "0"], "--limit must be"),
}


@pytest.fixture(scope="module")
def kept_template(tmp_path_factory) -> tuple[Path, dict]:
    """A store holding one good dataset, 'keep', built once and copied for each test."""
    folder = tmp_path_factory.mktemp("kept")
    store = Store(folder / "ws.duckdb", lock_timeout=30)
    ingest_dataset(store, str(write_jsonl(folder / "keep.jsonl", ROWS)), "keep")
    return store.path, state(store)


@pytest.fixture
def kept(store, kept_template) -> dict:
    """What the store holds before a bad ingest; it must hold exactly that after it."""
    shutil.copyfile(kept_template[0], store.path)
    return kept_template[1]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what building the input printed (datasets' progress bars)
    rc = cli_main([*map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(err: str, expected: str) -> None:
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith("error: "), err
    assert expected in err


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_with_one_line_and_leaves_the_store_intact(
    store, tmp_path, kept, capsys, case
):
    make, extra, expected = BAD_INPUTS[case]
    bad = tmp_path / "bad"
    bad.mkdir()
    source = make(bad)

    # Replacing the stored dataset is the hardest case: the old one must survive the failure.
    rc, out, err = run_cli(
        capsys, "ingest", source, "--name", "keep", "--replace", "--db", store.path, *extra
    )

    assert rc == 2
    assert out == ""
    assert_one_error_line(err, expected)
    assert state(store) == kept


@pytest.mark.parametrize(
    "case", ["broken json after the first batch", "truncated gzip", "duplicate ids"]
)
def test_failing_late_leaves_no_partial_dataset(store, tmp_path, kept, capsys, case):
    make, extra, expected = BAD_INPUTS[case]

    rc, _, err = run_cli(
        capsys, "ingest", make(tmp_path), "--name", "new", "--db", store.path, *extra
    )

    assert rc == 2
    assert_one_error_line(err, expected)
    assert state(store) == kept


def test_existing_name_needs_replace(store, tmp_path, kept, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "other"}])

    rc, _, err = run_cli(capsys, "ingest", path, "--name", "keep", "--db", store.path)

    assert rc == 2
    assert_one_error_line(err, "dataset 'keep' already exists — pass --replace")
    assert state(store) == kept


def test_invalid_dataset_name(store, tmp_path, kept, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "other"}])

    rc, _, err = run_cli(capsys, "ingest", path, "--name", "../x", "--db", store.path)

    assert rc == 2
    assert_one_error_line(err, "dataset name '../x' is not valid")
    assert state(store) == kept


def test_cli_reports_one_line_on_success(store, tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": " "}, {"text": "b"}])

    rc, out, _ = run_cli(capsys, "ingest", path, "--name", "d", "--db", store.path)

    assert rc == 0
    assert out.startswith(
        "ingested 'd': 2 samples stored from text column 'text', 1 skipped "
        "(null/empty/whitespace), 0 "
    )
    assert len(out.splitlines()) == 1


def _subprocess(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize("case", ["missing file", "broken json after the first batch"])
def test_bad_input_in_a_real_process(store, tmp_path, kept, case):
    make, extra, expected = BAD_INPUTS[case]

    proc = _subprocess(
        "ingest", make(tmp_path), "--name", "keep", "--replace", "--db", store.path, *extra
    )

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_error_line(proc.stderr, expected)
    assert state(store) == kept


def test_real_process_uses_infoprune_db_env(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    db = tmp_path / "env.duckdb"

    proc = _subprocess(
        "ingest", path, "--name", "d", "--id-column", "id", env={"INFOPRUNE_DB": str(db)}
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ingested 'd': {len(ROWS)} samples stored")
    assert samples(Store(db), "d")[0] == ("doc-0", 0, TEXTS[0])


# --- concurrency ------------------------------------------------------------------------------


def test_ingest_waits_while_another_process_holds_the_store(store, tmp_path, kept):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            f"con = duckdb.connect({str(store.path)!r})\n"
            "print('locked', flush=True)\n"
            "time.sleep(1.0)\n"
            "con.close()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        report = ingest_dataset(store, str(write_jsonl(tmp_path / "d.jsonl", ROWS)), "d")
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=10)

    assert holder.returncode == 0
    assert waited > 0.5
    assert report.n_samples == len(ROWS)
    assert state(store)["keep"] == kept["keep"]


def test_preview_reads_the_first_rows_and_detects_the_columns(store, tmp_path):
    rows = [{"doc_id": f"d{i}", "lang": "en", "Content": f"text {i}"} for i in range(12)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    preview = preview_source(store, str(path))
    assert preview.columns == ["doc_id", "lang", "Content"]
    assert preview.rows.to_pylist() == rows[:5]
    assert (preview.text_column, preview.id_column) == ("Content", "doc_id")
    assert not list_datasets(store)["name"].tolist()  # a preview stores nothing

    bare = preview_source(store, str(write_jsonl(tmp_path / "q.jsonl", [{"words": "w"}])))
    assert (bare.text_column, bare.id_column) == (None, None)


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("/data/web crawl.jsonl.gz", "web-crawl"),
        ("/data/shard-*.parquet", "shard"),
        ("./txt_folder/", "txt_folder"),
        ("user/my-dataset", "my-dataset"),
        ("???.csv", "dataset"),
    ],
)
def test_default_dataset_name_comes_from_the_file_name(source, name):
    assert default_dataset_name(source) == name


def test_an_uploaded_copy_is_recorded_and_named_by_its_file_name(store, tmp_path):
    copy = tmp_path / ".infoprune-tmp-upload.jsonl"
    copy.write_text('{"text": "fine"}\n{broken\n')
    with pytest.raises(InputError) as err:
        ingest_dataset(store, str(copy), "up", source_name="corpus.jsonl")
    assert "corpus.jsonl" in str(err.value) and "infoprune-tmp" not in str(err.value)

    write_jsonl(copy, [{"text": "fine"}])
    ingest_dataset(store, str(copy), "up", source_name="corpus.jsonl")
    assert get_dataset(store, "up").source == "corpus.jsonl"
