"""Exports: the right rows in source order, original columns in order, manifest, exact rebuild."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from core.cli import main
from core.errors import InputError
from core.export import (
    default_export_name,
    export_from_manifest,
    export_subset,
    manifest_path_for,
    pair_path,
)
from core.rules import Rule
from core.scores import table_columns
from core.store import Store
from tests.helpers_runs import add_done_run, ingest_rows, model_scores

N = 20
# Columns in a deliberately unusual order: the text is neither first nor last.
ROWS = [
    {
        "url": f"https://example.org/{i}",
        "text": f"document {i} " + "word " * (i % 7 + 1),
        "id": f"doc-{i:02d}",
        "lang": "en" if i % 3 else "de",
        "n": i,
    }
    for i in range(N)
]
ORIGINAL_COLUMNS = ["url", "text", "id", "lang", "n"]
# bits_per_token: doc-00 highest ... doc-19 lowest; doc-05 and doc-06 unscored (null, missing).
BITS = {f"doc-{i:02d}": float(N - i) for i in range(N)}


def make_store(tmp_path) -> tuple[Store, str]:
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_rows(store, tmp_path, ROWS, id_column="id")
    scores = {
        sid: model_scores(bits * 10, 10, 40) | {"gzip_bits_per_byte": bits / 100}
        for sid, bits in BITS.items()
        if sid != "doc-06"
    }
    scores["doc-05"]["bits_per_token"] = None
    return store, add_done_run(store, "docs", scores)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("export"))


def read_rows(path, fmt: str) -> tuple[list[str], list[dict]]:
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return list(rows[0]), rows
    if fmt == "parquet":
        table = pq.read_table(path)
        return table.column_names, table.to_pylist()
    import datasets

    ds = datasets.load_from_disk(str(path))
    return ds.column_names, ds.to_list()


# prune-low 0.25 of the 18 scored samples = floor(4.5 + 0.5) = 5: the lowest are doc-19..doc-15.
PRUNED_LOW = [f"doc-{i:02d}" for i in range(15, 20)]
KEPT_LOW = [r["id"] for r in ROWS if r["id"] not in PRUNED_LOW]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_each_format_writes_the_kept_rows_in_source_order(scored, tmp_path, fmt):
    store, run = scored
    out = tmp_path / f"kept.{fmt}"
    result = export_subset(store, run, "bits_per_token", Rule("prune-low", 0.25), out, fmt=fmt)
    columns, rows = read_rows(out, fmt)
    assert columns == ["sample_id", *ORIGINAL_COLUMNS]
    assert [r["sample_id"] for r in rows] == KEPT_LOW  # unscored doc-05, doc-06 kept
    by_id = {r["id"]: r for r in ROWS}
    assert all({c: r[c] for c in ORIGINAL_COLUMNS} == by_id[r["id"]] for r in rows)
    assert result.n_rows == len(KEPT_LOW) == 15
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_with_scores_adds_every_stored_score_column(scored, tmp_path):
    store, run = scored
    out = tmp_path / "pruned.parquet"
    export_subset(
        store,
        run,
        "bits_per_token",
        Rule("prune-high", None, 0.1),
        out,
        part="pruned",
        with_scores=True,
    )
    table = pq.read_table(out)
    extra = table_columns()
    assert table.column_names == ["sample_id", *ORIGINAL_COLUMNS, *extra]
    rows = table.to_pylist()
    assert [r["sample_id"] for r in rows] == ["doc-00", "doc-01"]  # 0.1 · 18 = 1.8 -> 2
    assert rows[0]["bits_per_token"] == 20.0 and rows[0]["bits_total"] == 200.0
    assert rows[0]["gzip_bits_per_byte"] == 0.2 and rows[0]["n_tokens"] == 10


def test_manifest_records_source_run_rule_and_counts(scored, tmp_path):
    store, run = scored
    out = tmp_path / "mid.jsonl"
    export_subset(store, run, "bits_per_token", Rule("keep-middle", 0.1, 0.2), out, fmt="jsonl")
    m = json.loads(manifest_path_for(out).read_text())
    assert m["dataset"]["name"] == "docs" and len(m["dataset"]["fingerprint"]) == 32
    assert m["run"]["run_id"] == run and m["run"]["model_hash"] == "hash-test"
    assert m["run"]["settings"]["window"] == 64
    assert m["score"] == "bits_per_token"
    assert m["rule"] | {"description": None} == {
        "kind": "keep-middle",
        "by": "ratio",
        "low": 0.1,
        "high": 0.2,
        "stratify": None,
        "group_ratios": [],
        "dedup": None,
        "description": None,
    }
    sel = m["selection"]
    # 18 scored: low floor(1.8 + 0.5) = 2, high floor(3.6 + 0.5) = 4; two unscored kept.
    assert (sel["n_scored"], sel["n_unscored_kept"]) == (18, 2)
    assert (sel["n_pruned_low"], sel["n_pruned_high"], sel["n_kept"]) == (2, 4, 14)
    assert sel["thresholds"]["low"] == {"last_pruned": 2.0, "first_kept": 3.0}
    assert sel["thresholds"]["high"] == {"last_pruned": 17.0, "first_kept": 16.0}
    out_info = m["output"]
    assert (out_info["rows"], out_info["part"], out_info["order"]) == (14, "kept", "source")
    # Kept: 12 scored samples of 10 tokens; the unscored doc-05 has 10 tokens, doc-06 none.
    assert out_info["tokens"] == 130 and sel["total_tokens"] == 190
    assert m["infoprune_version"] and m["created_at"]


def test_from_manifest_rebuilds_identically_and_refuses_after_the_dataset_changes(tmp_path):
    store, run = make_store(tmp_path)
    db = str(store.path)
    first = tmp_path / "first.parquet"
    rc = main(
        ["export", "--db", db, "--run", run, "--rule", "prune-low", "--ratio", "0.3"]
        + ["--format", "parquet", "--out", str(first), "--with-scores"]
    )
    assert rc == 0
    again = tmp_path / "again.parquet"
    assert (
        main(
            ["export", "--db", db, "--from-manifest", f"{first}.manifest.json"]
            + ["--out", str(again)]
        )
        == 0
    )
    assert pq.read_table(again).equals(pq.read_table(first))
    assert json.loads(manifest_path_for(again).read_text())["rebuilt_from"].endswith(
        "first.parquet.manifest.json"
    )

    changed = [dict(r, text=r["text"] + "!") if r["id"] == "doc-03" else r for r in ROWS]
    ingest_rows(store, tmp_path, changed, id_column="id", replace=True)
    with pytest.raises(InputError, match="dataset 'docs' changed since the export"):
        export_from_manifest(store, manifest_path_for(first), tmp_path / "third.parquet")
    assert not (tmp_path / "third.parquet").exists()


def test_overwrite_is_refused_unless_asked_and_failures_leave_nothing(
    scored, tmp_path, monkeypatch
):
    store, run = scored
    out = tmp_path / "x.parquet"
    out.write_text("precious")
    with pytest.raises(InputError, match="already exists"):
        export_subset(store, run, "bits_per_token", Rule("prune-low", 0.5), out)
    assert out.read_text() == "precious"

    import core.export

    def broken(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(core.export, "parquet_to_hf", broken)
    with pytest.raises(RuntimeError):
        export_subset(
            store, run, "bits_per_token", Rule("prune-low", 0.5), tmp_path / "d", fmt="hf"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]

    export_subset(store, run, "bits_per_token", Rule("prune-low", 0.5), out, overwrite=True)
    assert pq.read_table(out).num_rows == 2 + 9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "run-nope", "--rule", "prune-low", "--ratio", "0.1"], "unknown run 'run-nope'"),
        (["--rule", "prune-low", "--ratio", "0.1"], "--run is required"),
        (["--rule", "prune-low"], "needs --ratio"),
        (["--rule", "prune-low", "--ratio", "1.2"], "between 0 and 1"),
        (["--rule", "prune-low", "--ratio", "abc"], "--ratio must be a number"),
        (["--rule", "keep-middle", "--ratio-low", "0.7", "--ratio-high", "0.4"], "more than 1"),
        (["--rule", "keep-middle", "--ratio", "0.2"], "--ratio-low and --ratio-high"),
        (["--rule", "cut", "--ratio", "0.2"], "unknown rule 'cut'"),
        (["--rule", "prune-low", "--ratio", "0.2", "--score", "nope"], "unknown score 'nope'"),
        (["--rule", "prune-low", "--ratio", "0.2", "--score", "word_entropy"], "no values for"),
        (["--rule", "prune-low", "--ratio", "0.2", "--part", "middle"], "unknown part"),
        (["--rule", "prune-low", "--ratio", "0.2", "--format", "csv"], "unknown format 'csv'"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(scored, tmp_path, capsys, args, message):
    store, run = scored
    argv = ["export", "--db", str(store.path), "--out", str(tmp_path / "o.parquet"), *args]
    if "--run" not in args and "--run is required" not in message:
        argv += ["--run", run]
    if "--format" not in args:
        argv += ["--format", "parquet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "o.parquet").exists()


def test_unfinished_run_and_manifest_flags_are_refused(scored, tmp_path, capsys):
    store, run = scored
    db = str(store.path)
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs SELECT * REPLACE ('run-busy' AS run_id, 'running' AS status, "
            "'k2' AS config_key) FROM runs WHERE run_id = ?",
            [run],
        )
    base = ["export", "--db", db, "--out", str(tmp_path / "o.jsonl"), "--format", "jsonl"]
    assert main([*base, "--run", "run-busy", "--rule", "prune-low", "--ratio", "0.1"]) == 2
    assert "is not finished" in capsys.readouterr().err
    assert (
        main(["export", "--db", db, "--from-manifest", "m.json", "--out", "o", "--rule", "x"]) == 2
    )
    assert "--from-manifest takes only --out" in capsys.readouterr().err
    assert (
        main(["export", "--db", db, "--from-manifest", str(tmp_path / "m.json"), "--out", "o"]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_kept_and_pruned_together_two_files_whose_manifests_rebuild_both(scored, tmp_path):
    store, run = scored
    out = tmp_path / "docs-kept.jsonl"
    result = export_subset(
        store, run, "bits_per_token", Rule("prune-low", 0.25), out, fmt="jsonl", part="both"
    )
    pruned = tmp_path / "docs-pruned.jsonl"
    assert (result.path, result.pair.path) == (out, pruned)
    assert [r["sample_id"] for r in read_rows(out, "jsonl")[1]] == KEPT_LOW
    assert [r["sample_id"] for r in read_rows(pruned, "jsonl")[1]] == PRUNED_LOW
    kept_m = json.loads(manifest_path_for(out).read_text())
    pruned_m = json.loads(manifest_path_for(pruned).read_text())
    assert (kept_m["output"]["part"], pruned_m["output"]["part"]) == ("kept", "pruned")
    assert kept_m["output"]["pair"]["path"] == str(pruned)
    assert pruned_m["output"]["pair"]["manifest"] == str(manifest_path_for(out))
    assert kept_m["output"]["pair"]["rows_sha256"] == pruned_m["output"]["rows_sha256"]
    assert "15 kept samples" in result.line() and "5 pruned samples (25.0%" in result.line()

    # Either manifest rebuilds both files, byte for byte, the other named by the same rule.
    export_from_manifest(store, manifest_path_for(pruned), tmp_path / "again-pruned.jsonl")
    assert (tmp_path / "again-pruned.jsonl").read_bytes() == pruned.read_bytes()
    assert (tmp_path / "again-kept.jsonl").read_bytes() == out.read_bytes()
    export_from_manifest(store, manifest_path_for(out), tmp_path / "third.jsonl")
    assert (tmp_path / "third.jsonl").read_bytes() == out.read_bytes()
    assert (tmp_path / "third-pruned.jsonl").read_bytes() == pruned.read_bytes()


def test_both_refuses_when_the_pruned_file_exists_and_writes_nothing(scored, tmp_path):
    store, run = scored
    (tmp_path / "x-pruned.parquet").write_text("precious")
    with pytest.raises(InputError, match="x-pruned.parquet already exists"):
        rule = Rule("prune-low", 0.2)
        export_subset(store, run, "bits_per_token", rule, tmp_path / "x.parquet", part="both")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-pruned.parquet"]


def test_part_both_from_the_cli_and_the_names_of_the_pair(scored, tmp_path, capsys):
    store, run = scored
    out = tmp_path / "web.parquet"
    argv = ["export", "--db", str(store.path), "--run", run, "--rule", "prune-high"]
    argv += ["--ratio", "0.1", "--format", "parquet", "--part", "both", "--out", str(out)]
    assert main(argv) == 0
    assert f"to {tmp_path / 'web-pruned.parquet'}" in capsys.readouterr().out
    assert pq.read_table(tmp_path / "web-pruned.parquet").column("id").to_pylist() == [
        "doc-00",
        "doc-01",
    ]
    assert pair_path(tmp_path / "a-kept.parquet", "kept").name == "a-pruned.parquet"
    assert pair_path(tmp_path / "a-pruned.jsonl", "pruned").name == "a-kept.jsonl"
    assert pair_path(tmp_path / "hf-folder", "kept").name == "hf-folder-pruned"


def test_default_name_follows_dataset_score_rule_ratios_and_part():
    name = default_export_name("docs", "bits_per_token", Rule("prune-low", 0.2), "kept", "parquet")
    assert name == "docs-bits_per_token-prune-low-0.2-kept.parquet"
    middle = Rule("keep-middle", 0.1, 0.05)
    assert default_export_name("docs", "weighted:0.7", middle, "pruned", "hf") == (
        "docs-weighted-0.7-keep-middle-0.1-0.05-pruned"
    )
    by_value = Rule("prune-high", None, 3.5, by="threshold")
    assert default_export_name("d", "word_entropy", by_value, "both", "jsonl") == (
        "d-word_entropy-prune-high-above-3.5-kept.jsonl"
    )


def test_a_manifest_rebuilds_from_any_directory_with_its_recorded_store(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "ws").mkdir()
    store, run = make_store(tmp_path / "ws")
    first = tmp_path / "first.parquet"
    export_subset(store, run, "bits_per_token", Rule("prune-low", 0.3), first)
    manifest = json.loads(manifest_path_for(first).read_text())
    assert manifest["dataset"]["store"] == str(store.path.resolve())
    assert manifest["dataset"]["source"].endswith(".jsonl")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no ./workspace here: only the recorded store has the run
    rebuild = ["export", "--from-manifest", f"{first}.manifest.json"]
    assert main([*rebuild, "--out", "again.parquet"]) == 0
    assert f"rebuilt from the store {store.path.resolve()}" in capsys.readouterr().out
    assert pq.read_table(elsewhere / "again.parquet").equals(pq.read_table(first))
    assert not (elsewhere / "workspace").exists()

    # --db wins over the recorded store: an empty store there has no such dataset.
    other = tmp_path / "other.duckdb"
    assert main([*rebuild, "--out", "third.parquet", "--db", str(other)]) == 2
    assert "cannot rebuild" in (err := capsys.readouterr().err) and "unknown dataset 'docs'" in err
