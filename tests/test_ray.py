"""Scale-out on Ray: the same numbers as the local engine, shard mode end to end, restart skips."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.cli import main
from core.ingest import ingest_dataset
from core.ray_engine import ShardWriter, batch_rows, shard_name
from core.ray_engine.shard_mode import bytes_per_row, columns_of
from tests.conftest import corpus_texts, write_jsonl

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

COLUMNS = [
    "n_bytes",
    "n_tokens",
    "bits_total",
    "bits_per_token",
    "bits_per_byte",
    "gzip_bits_per_byte",
    "word_entropy",
    "combined",
]


@pytest.fixture(scope="module")
def ray_local():
    # Ray's unix sockets live under its temp dir: keep the path short (about 100 bytes at most).
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=False,
        _temp_dir=temp,
    )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def docs(store, tmp_path) -> list[dict]:
    rows = [{"id": f"doc-{r['id']}", "text": r["text"][:1200]} for r in corpus_texts(40)]
    ingest_dataset(store, str(write_jsonl(tmp_path / "docs.jsonl", rows)), "docs", id_column="id")
    return rows


def _cli(capsys, store, *args: str) -> tuple[int, list[str], list[str]]:
    code = main([*args, "--db", str(store.path)])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def _scores(store, run_id: str) -> dict[str, dict]:
    df = store.query_df(
        f"SELECT sample_id, {', '.join(COLUMNS)} FROM scores WHERE run_id = ?", [run_id]
    )
    return {r["sample_id"]: r for r in df.to_dict("records")}


def _assert_same(a: dict, b: dict) -> float:
    """Equal per sample id (float32 weights: 1e-6 relative); returns the largest relative gap."""
    assert a.keys() == b.keys()
    worst = 0.0
    for sid, row in a.items():
        for col in COLUMNS:
            x, y = row[col], b[sid][col]
            assert x == pytest.approx(y, rel=1e-6), (sid, col, x, y)
            worst = max(worst, abs(x - y) / max(abs(y), 1e-30))
    return worst


def _score_args(model, *extra) -> list[str]:
    return ["score", "--model", str(model), "--dtype", "float32", "--window", "64", *extra]


def test_ray_engine_gives_the_local_numbers_and_an_ordinary_run(
    ray_local, store, docs, tiny_model_dir, capsys
):
    code, out, _ = _cli(capsys, store, *_score_args(tiny_model_dir, "--dataset", "docs"))
    assert code == 0
    local = out[-1]
    code, out, err = _cli(
        capsys, store, *_score_args(tiny_model_dir, "--dataset", "docs", "--engine", "ray")
    )
    assert code == 0, err[-3:]
    remote = out[-1]
    assert remote != local
    worst = _assert_same(_scores(store, remote), _scores(store, local))
    with capsys.disabled():
        print(f"\nray vs local, largest relative difference: {worst:.2e}")
    engine, status, n_done, n_total, settings = store.query(
        "SELECT engine, status, n_done, n_total, settings FROM runs WHERE run_id = ?", [remote]
    )[0]
    assert (engine, status, n_done, n_total) == ("ray", "done", len(docs), len(docs))
    assert json.loads(settings)["window"] == 64
    # The same command again reuses the finished run.
    code, out, err = _cli(
        capsys, store, *_score_args(tiny_model_dir, "--dataset", "docs", "--engine", "ray")
    )
    assert code == 0 and out[-1] == remote and "reusing" in err[-1]


def _write_shards(tmp_path: Path, rows: list[dict]) -> Path:
    src = tmp_path / "shards"
    src.mkdir()
    for i in range(3):
        part = rows[i::3]
        pq.write_table(pa.Table.from_pylist(part), src / f"part-{i}.parquet", row_group_size=5)
    return src


def test_shards_scored_attached_and_restarted(
    ray_local, store, docs, tiny_model_dir, capsys, tmp_path
):
    code, out, _ = _cli(capsys, store, *_score_args(tiny_model_dir, "--dataset", "docs"))
    local = out[-1]
    src = _write_shards(tmp_path, docs)
    dest = tmp_path / "scores"
    shard_cmd = _score_args(
        tiny_model_dir,
        "--engine",
        "ray",
        "--input",
        str(src / "*.parquet"),
        "--output",
        str(dest),
        "--id-column",
        "id",
    )
    code, out, err = _cli(capsys, store, *shard_cmd)
    assert code == 0, err[-3:]
    assert out[-1] == str(dest)
    manifest = json.loads((dest / "_manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["n_samples"] == len(docs)
    assert manifest["model_hash"] and manifest["settings"]["window"] == 64
    assert len(manifest["files"]) == 3 and sorted(p.name for p in dest.glob("*.parquet")) == sorted(
        e["output"] for e in manifest["files"]
    )
    assert manifest["deferred_measures"] == ["word_entropy", "combined"]

    code, out, err = _cli(capsys, store, "ingest-scores", str(dest), "--dataset", "docs")
    assert code == 0, err[-3:]
    attached = out[-1]
    worst = _assert_same(_scores(store, attached), _scores(store, local))
    with capsys.disabled():
        print(f"\nshards vs local, largest relative difference: {worst:.2e}")
    assert store.query("SELECT engine, n_done FROM runs WHERE run_id = ?", [attached]) == [
        ("ray", len(docs))
    ]

    # A restart rewrites only the missing shard.
    kept = {p.name: p.stat().st_mtime_ns for p in dest.glob("*.parquet")}
    lost = sorted(kept)[1]
    (dest / lost).unlink()
    code, out, err = _cli(capsys, store, *shard_cmd)
    assert code == 0, err[-3:]
    assert "scored 1 of 3 shards (2 already done)" in " ".join(err)
    for name, mtime in kept.items():
        assert (dest / name).exists()
        assert (dest / name).stat().st_mtime_ns == mtime or name == lost
    again = pq.read_table(dest / lost).to_pylist()
    assert (
        len(again)
        == manifest["files"][[e["output"] for e in manifest["files"]].index(lost)]["n_samples"]
    )


def _compress(data: bytes, suffix: str) -> bytes:
    import zstandard

    return gzip.compress(data) if suffix == ".gz" else zstandard.ZstdCompressor().compress(data)


def test_compressed_jsonl_shards_score_like_the_store(
    ray_local, store, docs, tiny_model_dir, capsys, tmp_path
):
    code, out, _ = _cli(capsys, store, *_score_args(tiny_model_dir, "--dataset", "docs"))
    local = _scores(store, out[-1])
    src = tmp_path / "jsonl"
    src.mkdir()
    half = len(docs) // 2
    for name, part in (("a.jsonl.gz", docs[:half]), ("b.jsonl.zst", docs[half:])):
        lines = "".join(json.dumps(r) + "\n" for r in part).encode()
        (src / name).write_bytes(_compress(lines, Path(name).suffix))
    dest = tmp_path / "scores"
    shard_cmd = ["--engine", "ray", "--input", str(src / "*.jsonl.*"), "--output", str(dest)]
    code, out, err = _cli(
        capsys, store, *_score_args(tiny_model_dir, *shard_cmd, "--id-column", "id")
    )
    assert code == 0, err[-3:]
    shards = pa.concat_tables([pq.read_table(p) for p in sorted(dest.glob("scores-*.parquet"))])
    assert sorted(shards.column("sample_id").to_pylist()) == sorted(local)
    for row in shards.to_pylist():
        for col in ("n_bytes", "n_tokens", "bits_total", "bits_per_byte", "gzip_bits_per_byte"):
            assert row[col] == pytest.approx(local[row["sample_id"]][col], rel=1e-6)


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_compressed_jsonl_is_read_and_measured_decompressed(tmp_path, suffix):
    rows = [{"id": f"d{i}", "text": "some words " * (20 + i)} for i in range(300)]
    plain = write_jsonl(tmp_path / "a.jsonl", rows)
    packed = tmp_path / f"a.jsonl{suffix}"
    packed.write_bytes(_compress(plain.read_bytes(), suffix))
    assert columns_of(str(packed), "json") == ["id", "text"]
    assert bytes_per_row(str(packed), "json", "text") == bytes_per_row(str(plain), "json", "text")


def _fake_shards(tmp_path: Path, ids: list[str]) -> Path:
    dest = tmp_path / "fake"
    dest.mkdir()
    pq.write_table(
        pa.table({"sample_id": ids, "n_bytes": [1] * len(ids)}), dest / "scores-a.parquet"
    )
    entry = {"input": "a.parquet", "output": "scores-a.parquet", "n_rows": len(ids)}
    manifest = {
        "status": "done",
        "model": "none",
        "model_hash": None,
        "settings": {"engine": "ray", "measures": [], "limit": None},
        "files": [dict(entry, n_samples=len(ids))],
        "n_files": 1,
    }
    (dest / "_manifest.json").write_text(json.dumps(manifest))
    return dest


def test_ingest_scores_refuses_wrong_ids_and_missing_or_corrupt_shards(
    store, docs, capsys, tmp_path
):
    dest = _fake_shards(tmp_path, [d["id"] for d in docs[:-1]] + ["stranger"])
    code, _, err = _cli(capsys, store, "ingest-scores", str(dest), "--dataset", "docs")
    assert code == 2 and len(err) == 1
    assert "1 of its samples have no score, 1 shard ids are not in it (e.g. 'stranger')" in err[0]

    (dest / "scores-a.parquet").write_bytes(b"PAR1 not really")
    code, _, err = _cli(capsys, store, "ingest-scores", str(dest), "--dataset", "docs")
    assert code == 2 and len(err) == 1 and "is corrupt" in err[0]

    (dest / "scores-a.parquet").unlink()
    code, _, err = _cli(capsys, store, "ingest-scores", str(dest), "--dataset", "docs")
    assert code == 2 and len(err) == 1 and "is missing" in err[0]

    code, _, err = _cli(capsys, store, "ingest-scores", str(tmp_path), "--dataset", "docs")
    assert code == 2 and "has no _manifest.json" in err[0]
    assert store.query("SELECT count(*) FROM runs") == [(0,)]


def test_default_ids_are_file_path_and_row(tmp_path):
    root = tmp_path / "in"
    names = {str(root / "a.parquet"): "scores-a.parquet"}
    writer = ShardWriter(tmp_path, root, names, None)
    batch = pa.table(
        {
            "path": [str(root / "a.parquet")] * 3,
            "n_bytes": pa.array([3, None, 5], pa.int64()),
            "_keep": [True, False, True],
        }
    )
    writer.add(batch.slice(0, 2))
    writer.add(batch.slice(2))
    writer.finish(list(names))
    table = pq.read_table(tmp_path / "scores-a.parquet")
    assert table.column("sample_id").to_pylist() == ["a.parquet:0", "a.parquet:2"]
    assert json.loads(table.schema.metadata[b"infoprune"]) == {"n_rows": 3, "n_samples": 2}


def test_batches_are_sized_in_tokens_and_names_are_stable(tmp_path):
    assert batch_rows(4000, 8192) == 32  # ~1,000 tokens a row: 4 forward batches of 8,192
    assert batch_rows(40, 8192) == 3276
    assert batch_rows(10**9, 8192) == 1
    a = shard_name(str(tmp_path / "x" / "p.parquet"), tmp_path)
    assert a == shard_name(str(tmp_path / "x" / "p.parquet"), tmp_path)
    assert a != shard_name(str(tmp_path / "y" / "p.parquet"), tmp_path)


def test_missing_ray_is_one_line(monkeypatch, store, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, _, err = _cli(
        capsys, store, "score", "--dataset", "x", "--model", "none", "--engine", "ray"
    )
    assert code == 2
    assert err == ["error: Ray is not installed — pip install 'infoprune[ray]'"]
