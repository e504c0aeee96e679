"""Measures: exact to their definitions, cached word counts, the catalogue, derived scores."""

from __future__ import annotations

import importlib
import math
import re
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from core import corpus, scores
from core.cli import main
from core.corpus import load_corpus_stats, load_word_counts
from core.datasets import get_dataset
from core.engine import SampleScore
from core.errors import InputError
from core.ingest import ingest_dataset
from core.measures import registry
from core.measures.base import Batch, Measure, compute_all, corpus_wide
from core.measures.combined import Combined
from core.measures.word_entropy import WordEntropy, split_words
from core.scoring import ScoreOptions, score_dataset
from core.store import Store
from tests.conftest import corpus_texts, write_jsonl

UNICODE_TEXTS = [
    "Straße ÜBER naïve Café — ’tis the café's CAFÉ",
    "ΣΟΦΟΣ ΑΣ.Α ΑΣ. σοφός; İstanbul ǅemal K\u212aelvin",
    "日本語のテキスト、東京。 x\u00a0y ab\u00e9cd_12 \u0663\u0664",
    "e\u0301 combining acute; ﬁ ligature; ① ² ½",
    "!!! --- ...",  # no words
]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _ingest(store: Store, tmp_path: Path, name: str = "docs", n: int = 40) -> list[dict]:
    rows = [{"id": r["id"], "text": r["text"][:3000]} for r in corpus_texts(n)]
    rows += [{"id": f"u{i}", "text": t} for i, t in enumerate(UNICODE_TEXTS)]
    ingest_dataset(store, str(write_jsonl(tmp_path / f"{name}.jsonl", rows)), name, id_column="id")
    return rows


def _stored(store: Store, run_id: str, column: str) -> dict:
    return dict(store.query(f"SELECT sample_id, {column} FROM scores WHERE run_id = ?", [run_id]))


def _expected_word_entropy(texts: list[str]) -> list[float | None]:
    counts = Counter(w for t in texts for w in _words(t))
    total = sum(counts.values())
    out = []
    for t in texts:
        words = _words(t)
        out.append(
            sum(-math.log2(counts[w] / total) for w in words) / len(words) if words else None
        )
    return out


def _assert_close(got: list, expected: list) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == (None if e is None else pytest.approx(e, rel=1e-12))


def test_split_words_equals_python_regex_per_text():
    every_char = "".join(map(chr, [*range(0x80, 0xD800), *range(0xE000, 0x10000), 0x1F600]))
    texts = [r["text"] for r in corpus_texts(300)] + [every_char] + UNICODE_TEXTS + ["", "a", " b"]
    words, parents = split_words(texts)
    got: list[list[str]] = [[] for _ in texts]
    for w, p in zip(words.to_pylist(), parents.tolist(), strict=True):
        got[p].append(w)
    assert got == [_words(t) for t in texts]
    assert got[len(texts) - 4] == []  # "!!! --- ..."


def test_model_free_run_stores_exact_word_entropy_and_gzip(store, tmp_path):
    rows = _ingest(store, tmp_path)
    outcome = score_dataset(store, "docs", ScoreOptions(model="none"))
    texts = {r["id"]: r["text"] for r in rows}
    expected = dict(zip(texts, _expected_word_entropy(list(texts.values())), strict=True))
    got = _stored(store, outcome.run_id, "word_entropy")
    assert got.keys() == expected.keys()
    _assert_close([got[sid] for sid in expected], list(expected.values()))
    assert got["u4"] is None and got["u0"] > 0

    gzip = _stored(store, outcome.run_id, "gzip_bits_per_byte")
    for sid, text in texts.items():
        data = text.encode("utf-8")
        assert gzip[sid] == pytest.approx(8 * len(zlib.compress(data, 9)) / len(data), rel=1e-15)
    assert set(_stored(store, outcome.run_id, "combined").values()) == {None}


def test_word_counts_equal_a_direct_counter_and_are_cached_by_fingerprint(
    store, tmp_path, monkeypatch
):
    rows = _ingest(store, tmp_path)
    info = get_dataset(store, "docs")
    load_corpus_stats(store, info)
    table = load_word_counts(store, info.fingerprint)
    stored = dict(zip(*table.to_pydict().values(), strict=True))
    assert stored == Counter(w for r in rows for w in _words(r["text"]))

    # The same text under another name has the same fingerprint: no second counting pass.
    _ingest(store, tmp_path, name="copy")
    copy = get_dataset(store, "copy")
    assert copy.fingerprint == info.fingerprint

    def no_recount(*_):
        raise AssertionError("counted again")

    monkeypatch.setattr(corpus, "count_dataset_words", no_recount)
    stats = load_corpus_stats(store, copy)
    texts = [r["text"] for r in rows]
    batch = Batch(texts, [len(t.encode()) for t in texts], model_scores=None)
    values = WordEntropy().compute(batch, stats)
    _assert_close(values, _expected_word_entropy(texts))
    n_rows = store.query("SELECT count(*) FROM word_counts")[0][0]
    assert n_rows == len(stored)


def test_word_counts_stream_in_chunks(store, tmp_path, monkeypatch):
    rows = _ingest(store, tmp_path)
    monkeypatch.setattr(corpus, "COUNT_CHUNK_BYTES", 2000)  # many small reads
    counts = corpus.count_dataset_words(store, get_dataset(store, "docs"))
    assert counts == Counter(w for r in rows for w in _words(r["text"]))


def test_combined_is_bits_per_token_plus_word_entropy(store, tmp_path):
    rows = _ingest(store, tmp_path)
    stats = load_corpus_stats(store, get_dataset(store, "docs"))
    texts = [r["text"] for r in rows]
    model = [SampleScore(n_tokens=i % 7, bits_total=3.5 * i) for i in range(len(texts))]
    batch = Batch(texts, [len(t.encode()) for t in texts], model)
    got = compute_all([WordEntropy(), Combined()], batch, stats)["combined"]
    for value, s, h in zip(got, model, _expected_word_entropy(texts), strict=True):
        if s.n_tokens == 0 or h is None:
            assert value is None
        else:
            assert value == pytest.approx(s.bits_total / s.n_tokens + h, rel=1e-12)


def test_combined_stored_with_a_model_run(store, tmp_path, tiny_model_dir):
    _ingest(store, tmp_path, n=8)
    run = score_dataset(
        store, "docs", ScoreOptions(model=str(tiny_model_dir), dtype="float32")
    ).run_id
    rows = store.query(
        "SELECT bits_per_token, word_entropy, combined FROM scores WHERE run_id = ?", [run]
    )
    assert sum(c is not None for *_, c in rows) >= 8
    for bpt, h, c in rows:
        assert c == (None if bpt is None or h is None else pytest.approx(bpt + h, rel=1e-12))


def test_model_none_through_the_cli(tmp_path, capsys):
    db = str(tmp_path / "cli.duckdb")
    rows = [{"id": str(i), "text": r["text"]} for i, r in enumerate(corpus_texts(30))]
    assert (
        main(["ingest", str(write_jsonl(tmp_path / "c.jsonl", rows)), "--name", "c", "--db", db])
        == 0
    )
    assert main(["score", "--dataset", "c", "--model", "none", "--db", db]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    counts = Store(db).query(
        "SELECT count(*), count(word_entropy), count(gzip_bits_per_byte), count(combined), "
        "count(bits_per_token) FROM scores WHERE run_id = ?",
        [run_id],
    )[0]
    assert counts == (30, 30, 30, 0, 0)


def test_one_module_and_one_registry_entry_per_measure():
    modules = [type(m).__module__ for m in registry.MEASURES]
    assert len(set(modules)) == len(modules)
    for m, module in zip(registry.MEASURES, modules, strict=True):
        assert module.startswith("core.measures.") and isinstance(m, Measure)
        assert getattr(importlib.import_module(module), type(m).__name__) is type(m)
        assert re.fullmatch(r"[a-z_]+", m.name) and m.unit and m.description
    names = [m.name for m in registry.MEASURES]
    assert names == ["word_entropy", "gzip_bits_per_byte", "combined"]
    assert {m.name: m.needs_model for m in registry.MEASURES} == {
        "word_entropy": False,
        "gzip_bits_per_byte": False,
        "combined": True,
    }
    assert set(names) <= set(scores.table_columns()) and set(names) <= set(scores.score_names())
    assert "weighted:0.5" in scores.score_names()


def test_one_catalogue_orders_table_columns_and_pickers():
    measures = ["word_entropy", "gzip_bits_per_byte", "combined"]
    dataset = ["dup_count", "near_dup_count"]  # whole-dataset counts, core/duplicates.py
    assert scores.table_columns() == [
        *["n_bytes", "n_tokens", "bits_total", "bits_per_token", "bits_per_byte"],
        *measures,
        *dataset,
    ]
    model = ["bits_per_token", "bits_total", "bits_per_byte"]
    assert scores.stored_score_names() == [*model, *measures, *dataset, "n_tokens", "n_bytes"]
    assert scores.stored_score_names(scores.DATASET) == dataset
    assert {scores.get_score(n).sql_type for n in dataset} == {"BIGINT"}
    assert scores.stored_score_names(scores.ENGINE) == [*model, "n_tokens", "n_bytes"]
    assert sorted(scores.ENGINE_COLUMNS) == sorted(scores.stored_score_names(scores.ENGINE))
    assert [m.name for m in registry.MEASURES] == scores.stored_score_names(scores.MEASURE)
    assert scores.get_score("n_tokens").label == "length (tokens)"
    with pytest.raises(InputError, match="unknown score"):
        scores.get_score("nope")


def test_combined_reads_the_word_entropy_column_it_depends_on():
    model = [SampleScore(n_tokens=n, bits_total=b) for n, b in ((4, 10.0), (0, 0.0), (2, 3.0))]
    batch = Batch(["a", "b", "c"], [1, 1, 1], model, {"word_entropy": [2.0, 1.0, None]})
    assert Combined().compute(batch, None) == [4.5, None, None]
    with pytest.raises(RuntimeError, match="reads word_entropy"):
        compute_all([Combined()], Batch(["a"], [1], model[:1]))
    assert [m.name for m in corpus_wide(registry.all_measures())] == ["word_entropy", "combined"]


def test_the_store_imports_no_measure():
    code = "import sys, core.store; print(sorted(m for m in sys.modules if 'measures' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _weighted_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(7)],
            "bits_per_token": [3.0, 5.5, 4.0, None, 2.0, 7.25, 4.0],
            "word_entropy": [9.0, 10.5, 8.0, 11.0, None, 12.0, 9.5],
        }
    )


def _weighted_store(tmp_path) -> Store:
    store = Store(tmp_path / "w.duckdb")
    df = _weighted_frame()
    other = df.assign(bits_per_token=df.bits_per_token * 10 + 100, word_entropy=1.0)
    with store.transaction() as con:
        for run_id, frame in (("run-a", df), ("run-b", other)):
            con.register(
                "_f", pa.Table.from_pandas(frame.assign(run_id=run_id), preserve_index=False)
            )
            con.execute(
                "INSERT INTO scores (run_id, sample_id, bits_per_token, word_entropy) "
                "SELECT run_id, sample_id, bits_per_token, word_entropy FROM _f"
            )
            con.unregister("_f")
    return store


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_weighted_score_is_the_z_score_mix_over_one_run(tmp_path, alpha):
    store = _weighted_store(tmp_path)
    name = scores.weighted_name(alpha)
    got = dict(
        store.query(
            f"SELECT sample_id, {scores.score_expression(name)} FROM scores WHERE run_id = ?",
            ["run-a"],
        )
    )
    df = _weighted_frame().set_index("sample_id")
    z = (df - df.mean()) / df.std(ddof=0)
    # Both columns needed at every α (0 · NaN is NaN): a sample lacking one is unscored.
    parts = [w * z[c] for w, c in ((alpha, "bits_per_token"), (1 - alpha, "word_entropy"))]
    expected = sum(parts)
    for sid, value in expected.items():
        if pd.isna(value):
            assert got[sid] is None, sid
        else:
            assert got[sid] == pytest.approx(value, rel=1e-12, abs=1e-12), sid
    assert scores.score_columns(name) == ["bits_per_token", "word_entropy"]


def test_score_expression_rejects_junk():
    assert scores.score_expression("word_entropy") == "word_entropy"
    assert scores.score_expression("n_bytes") == "n_bytes"
    assert scores.weighted_name(0.7) == "weighted:0.7"
    for bad in [
        "",
        "nope",
        "weighted:",
        "weighted:1.5",
        "weighted:-0.1",
        "weighted:0.12345",
        "weighted:0.5; DROP TABLE scores",
        "weighted:0.5 OR 1=1",
        "Weighted:0.5",
        "bits_per_token)",
        "word_entropy + 1",
    ]:
        with pytest.raises(InputError):
            scores.score_expression(bad)
    with pytest.raises(InputError):
        scores.weighted_name(1.2)
