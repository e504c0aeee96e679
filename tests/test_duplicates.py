"""Exact and near duplicates (core/duplicates.py): counts and clusters against brute force, the
hook every scoring run passes (CLI, Ray), the back-fill of old runs and stores, and reuse."""

from __future__ import annotations

import random
import re

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import core.duplicates
from core.cli import main
from core.duplicates import (
    MIN_AGREEING,
    ensure_duplicates,
    find_duplicates,
    minhash_signatures,
    near_pairs,
    shingle_hashes,
    sign_locally,
    union,
)
from core.errors import InputError
from core.measures.word_entropy import split_words
from core.store import SCHEMA, Store
from tests.conftest import corpus_texts
from tests.helpers_runs import add_done_run, ingest_rows

EDITED = "zyzzyva"


def _docs(n: int, min_words: int = 150) -> list[str]:
    """N long, distinct real texts of one kind (Python documentation sections)."""
    texts = [
        r["text"]
        for r in corpus_texts(600)
        if r["source"] == "python-docs" and len(r["text"].split()) >= min_words
    ]
    assert len(texts) >= n
    return texts[:n]


def _edit(text: str, k: int = 1, seed: int = 0) -> str:
    """TEXT with K of its words replaced, far apart."""
    words = text.split(" ")
    rng = random.Random(seed)
    for at in rng.sample(range(len(words)), k):
        words[at] = EDITED
    return " ".join(words)


def _jaccard(a: str, b: str) -> float:
    """The true Jaccard similarity of two texts' word 5-gram sets (written independently)."""

    def shingles(t: str) -> set:
        w = re.findall(r"\w+", t.lower())
        return {tuple(w)} if 0 < len(w) < 5 else {tuple(w[i : i + 5]) for i in range(len(w) - 4)}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def _brute_force(texts: list[str]) -> tuple[list[int], list[int], list[int]]:
    """Per text (row i): dup_count, near_dup_count and cluster id, comparing every pair."""
    sig, has = minhash_signatures(texts)
    n = len(texts)
    near = [
        [
            j
            for j in range(n)
            if j != i
            and (
                texts[i] == texts[j]
                or (has[i] and has[j] and (sig[i] == sig[j]).sum() >= MIN_AGREEING)
            )
        ]
        for i in range(n)
    ]
    cluster = list(range(n))
    for start in range(n):  # a search from each row; rows reached keep the smallest start
        seen, todo = {start}, [start]
        while todo:
            for j in near[todo.pop()]:
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        for j in seen:
            cluster[j] = min(cluster[j], start)
    dup = [sum(t == u for u in texts) - 1 for t in texts]
    return dup, [len(x) for x in near], cluster


def _ingest(store, tmp_path, texts: list[str], name: str = "docs", lead_blank: int = 0) -> None:
    rows = [{"id": f"x{i}", "text": " "} for i in range(lead_blank)]  # skipped: row_idx shifts
    rows += [{"id": f"s{i:03d}", "text": t} for i, t in enumerate(texts)]
    ingest_rows(store, tmp_path, rows, name=name, id_column="id")


def _counts(store, run_id: str) -> dict[str, tuple]:
    return {
        sid: (dup, near)
        for sid, dup, near in store.query(
            "SELECT sample_id, dup_count, near_dup_count FROM scores WHERE run_id = ?", [run_id]
        )
    }


def _clusters(store, run_id: str) -> dict[str, tuple]:
    return {
        sid: (c, e)
        for sid, c, e in store.query(
            "SELECT sample_id, cluster_id, exact_cluster_id FROM dup_clusters WHERE run_id = ?",
            [run_id],
        )
    }


def _found(store, dataset: str = "docs") -> tuple[dict, dict]:
    dups = find_duplicates(store, dataset)
    counts = dups.counts.to_pylist()
    clusters = dups.clusters.to_pylist()
    return (
        {r["sample_id"]: (r["dup_count"], r["near_dup_count"]) for r in counts},
        {r["sample_id"]: (r["cluster_id"], r["exact_cluster_id"]) for r in clusters},
    )


def _score(capsys, store, dataset: str = "docs", *extra: str) -> str:
    code = main(["score", "--dataset", dataset, "--model", "none", *extra, "--db", str(store.path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.strip().splitlines()[-1]


# ---- shingles and signatures -------------------------------------------------------------------


def test_shingles_are_word_5_grams_of_the_measures_words():
    texts = ["One two three four five six", "one, TWO; three", "ONE two three", "!!! ???", "a"]
    hashes, offsets = shingle_hashes(texts)
    per_text = [
        hashes[int(a) : int(b)].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]
    assert [len(h) for h in per_text] == [2, 1, 1, 0, 1]  # 6 words: 2 grams; < 5 words: one
    assert per_text[1] == per_text[2]  # case and punctuation are not words
    assert per_text[4] != per_text[1]
    # The words are word_entropy's, non-ASCII included.
    accented = ["Naïve CAFÉ déjà vu encore", "naïve café déjà vu encore"]
    h, _ = shingle_hashes(accented)
    assert h[0] == h[1]
    assert split_words(accented[:1])[0].to_pylist() == ["naïve", "café", "déjà", "vu", "encore"]
    # Order matters inside a shingle; the hash does not depend on the batch a text is in.
    assert shingle_hashes(["five four three two one"])[0][0] != shingle_hashes(texts[:1])[0][0]
    assert shingle_hashes(texts[1:2])[0].tolist() == per_text[1]


def test_signatures_estimate_the_jaccard_similarity():
    base = _docs(1)[0]
    n = len(base.split(" "))
    variants = [base, _edit(base, 1), _edit(base, n // 30, seed=1), _edit(base, n // 6, seed=2)]
    sig, has = minhash_signatures(variants)
    assert sig.shape == (4, 128) and sig.dtype == np.uint32 and has.all()
    for v in variants[1:]:
        estimate = (sig[0] == minhash_signatures([v])[0][0]).mean()
        assert estimate == pytest.approx(_jaccard(base, v), abs=0.12)
    assert _jaccard(base, variants[3]) < 0.7  # the range the estimate was checked over
    assert not minhash_signatures(["--- ..."])[1][0]


# ---- counts and clusters -----------------------------------------------------------------------


def test_exact_counts_on_known_groups(store, tmp_path):
    a, b, c = _docs(3)
    texts = [a, b, a, c, a, b, c + " ", c.replace(" ", "  ", 1), "Short one.", "Short one."]
    _ingest(store, tmp_path, texts)
    counts, clusters = _found(store)
    dup = {sid: d for sid, (d, _) in counts.items()}
    assert dup == {
        "s000": 2,
        "s001": 1,
        "s002": 2,
        "s003": 0,  # its whitespace variants are other texts
        "s004": 2,
        "s005": 1,
        "s006": 0,
        "s007": 0,
        "s008": 1,
        "s009": 1,
    }
    # Whitespace variants have the same words: near, not exact duplicates.
    assert [counts[s][1] for s in ("s003", "s006", "s007")] == [2, 2, 2]
    assert clusters["s000"] == clusters["s004"] == (0, 0)
    assert clusters["s001"] == (1, 1) and clusters["s005"] == (1, 1)
    assert clusters["s003"] == (3, None) and clusters["s007"] == (3, None)
    assert clusters["s008"] == (8, 8) and clusters["s009"] == (8, 8)


def test_one_word_edits_are_near_and_texts_on_one_topic_are_not(store, tmp_path):
    docs = _docs(12)
    assert max(_jaccard(x, y) for i, x in enumerate(docs) for y in docs[i + 1 :]) < 0.5
    edited = [_edit(d, 1, seed=i) for i, d in enumerate(docs[:4])]
    _ingest(store, tmp_path, docs + edited)
    counts, clusters = _found(store)
    near = [counts[f"s{i:03d}"][1] for i in range(16)]
    assert near == [1, 1, 1, 1] + [0] * 8 + [1, 1, 1, 1]
    assert all(counts[f"s{i:03d}"][0] == 0 for i in range(16))
    assert {sid: c for sid, (c, _) in clusters.items()} == {
        **{f"s{i:03d}": i for i in range(4)},
        **{f"s{i + 12:03d}": i for i in range(4)},
    }


@pytest.mark.parametrize("pair_block", [None, 3])
def test_counts_and_clusters_equal_brute_force(store, tmp_path, monkeypatch, pair_block):
    if pair_block:  # huge buckets are verified a few pairs at a time
        monkeypatch.setattr(core.duplicates, "PAIR_BLOCK", pair_block)
    rng = random.Random(7)
    docs = _docs(20)
    texts = list(docs)
    for i in range(60):
        base = rng.choice(texts)
        kind = rng.random()
        texts.append(base if kind < 0.3 else _edit(base, rng.randint(1, 12), seed=i))
    texts += ["--- ...", "--- ...", "***", "tiny text", "Tiny, text!"]
    rng.shuffle(texts)
    _ingest(store, tmp_path, texts)
    counts, clusters = _found(store)
    dup, near, cluster = _brute_force(texts)
    ids = [f"s{i:03d}" for i in range(len(texts))]
    assert [counts[s] for s in ids] == list(zip(dup, near, strict=True))
    assert sum(n > d for d, n in zip(dup, near, strict=True)) > 20  # near-only pairs were tested
    expected = {
        s: (cluster[i], min(j for j, t in enumerate(texts) if t == texts[i]) if dup[i] else None)
        for i, s in enumerate(ids)
        if near[i]
    }
    assert clusters == expected
    assert counts[ids[texts.index("***")]] == (0, 0)
    assert counts[ids[texts.index("--- ...")]] == (1, 1)  # no words: exact copies only


def test_union_joins_the_components_of_a_search():
    rng = np.random.default_rng(3)
    n = 300
    i, j = rng.integers(0, n, 260), rng.integers(0, n, 260)
    parent = np.arange(n)
    union(parent, i[:130], j[:130])
    union(parent, i[130:], j[130:])

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    neighbours = {k: set() for k in range(n)}
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        neighbours[a].add(b)
        neighbours[b].add(a)
    for start in range(n):
        seen, todo = {start}, [start]
        while todo:
            for k in neighbours[todo.pop()] - seen:
                seen.add(k)
                todo.append(k)
        assert root(start) == min(seen)


def test_near_pairs_lists_each_pair_once():
    base = _docs(1)[0]
    sig, has = minhash_signatures([_edit(base, 1, seed=s) for s in range(30)])
    pairs = [p for i, j in near_pairs(sig, has) for p in zip(i.tolist(), j.tolist(), strict=True)]
    assert len(pairs) == len(set(pairs)) == 30 * 29 // 2
    assert all(a < b for a, b in pairs)


# ---- runs: the CLI, Ray, back-fill, reuse ------------------------------------------------------


def _planted(n_docs: int = 10) -> list[str]:
    docs = _docs(n_docs)
    return docs + [docs[0], docs[0], _edit(docs[1], 1), _edit(docs[2], 2, seed=5), "x y", "X: y!"]


def test_a_model_free_cli_run_stores_both_counts_and_the_clusters(store, tmp_path, capsys):
    texts = _planted()
    _ingest(store, tmp_path, texts, lead_blank=2)  # row_idx = position + 2
    run = _score(capsys, store)
    counts = _counts(store, run)
    dup, near, cluster = _brute_force(texts)
    assert counts == {f"s{i:03d}": (d, n) for i, (d, n) in enumerate(zip(dup, near, strict=True))}
    assert _clusters(store, run) == {
        "s000": (2, 2),
        "s010": (2, 2),
        "s011": (2, 2),
        "s001": (3, None),
        "s012": (3, None),
        "s002": (4, None),
        "s013": (4, None),
        "s014": (16, None),
        "s015": (16, None),
    }
    assert store.query("SELECT status FROM runs WHERE run_id = ?", [run])[0][0] == "done"
    # A run of part of the dataset counts its own samples over the whole dataset, and holds the
    # clusters of all: dedup prunes an unscored copy too (core/rules.py), none is left twice.
    part = _score(capsys, store, "docs", "--limit", "3")
    assert _counts(store, part) == {s: counts[s] for s in ("s000", "s001", "s002")}
    assert _clusters(store, part) == _clusters(store, run)
    from core.prune import duplicate_rows

    for mode in ("exact", "near"):
        assert list(duplicate_rows(store, part, "docs", mode)) == list(
            duplicate_rows(store, run, "docs", mode)
        )
    rows = [int(r) for r in duplicate_rows(store, part, "docs", "exact")]
    ids = store.query(
        "SELECT sample_id FROM samples WHERE dataset = 'docs' AND list_contains(?, row_idx) "
        "ORDER BY sample_id",
        [rows],
    )
    assert [i for (i,) in ids] == ["s010", "s011"]  # copies of s000, which the part did not score


def test_a_run_whose_duplicate_pass_fails_is_not_done(store, tmp_path, capsys, monkeypatch):
    _ingest(store, tmp_path, _planted())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(core.duplicates, "find_duplicates", interrupted)
    assert main(["score", "--dataset", "docs", "--model", "none", "--db", str(store.path)]) == 130
    ((run, status, error),) = store.query("SELECT run_id, status, error FROM runs")
    assert status == "failed" and error.startswith("counting duplicates failed")
    assert store.query("SELECT count(*), count(near_dup_count) FROM scores") == [(16, 0)]
    monkeypatch.undo()
    assert _score(capsys, store) == run  # resumed: every sample scored, only the pass left
    assert len(_counts(store, run)) == 16 and len(_clusters(store, run)) == 9


def test_a_run_of_the_same_content_copies_the_counts(store, tmp_path, capsys, monkeypatch):
    texts = _planted()
    _ingest(store, tmp_path, texts)
    first = _score(capsys, store)
    _ingest(store, tmp_path, texts, name="again", lead_blank=3)  # same content, rows shifted

    def recomputed(*args, **kwargs):
        raise AssertionError("the counts of a known content were computed again")

    monkeypatch.setattr(core.duplicates, "find_duplicates", recomputed)
    second = _score(capsys, store, "again", "--limit", "16")  # another run (the same key reuses)
    assert second != first
    assert _counts(store, second) == _counts(store, first)
    shifted = {
        s: (c + 3, None if e is None else e + 3) for s, (c, e) in _clusters(store, first).items()
    }
    assert _clusters(store, second) == shifted


def test_ensure_duplicates_back_fills_a_run_scored_before_they_existed(store, tmp_path):
    texts = _planted()
    _ingest(store, tmp_path, texts)
    ids = [f"s{i:03d}" for i in range(len(texts))]
    old = add_done_run(store, "docs", {s: {"n_bytes": 1} for s in ids}, model_hash=None)
    assert set(_counts(store, old).values()) == {(None, None)}
    assert ensure_duplicates(store, old) is True
    counts, clusters = _found(store)
    assert _counts(store, old) == counts and _clusters(store, old) == clusters
    assert ensure_duplicates(store, old) is False
    with store.transaction() as con:
        con.execute("UPDATE runs SET status = 'failed' WHERE run_id = ?", [old])
    with pytest.raises(InputError, match="not done"):
        ensure_duplicates(store, old)
    with pytest.raises(InputError, match="unknown run"):
        ensure_duplicates(store, "run-nope")


def test_an_old_store_gets_the_columns_and_the_table(tmp_path, capsys):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for ddl in SCHEMA:
        if "dup_clusters" not in ddl:
            con.execute(ddl)
    assert "dup_count" not in [r[0] for r in con.execute("DESCRIBE scores").fetchall()]
    con.close()
    store = Store(path, lock_timeout=30)
    texts = _planted()
    _ingest(store, tmp_path, texts)
    columns = {r[0]: r[1] for r in store.query("DESCRIBE scores")}
    assert columns["dup_count"] == columns["near_dup_count"] == "BIGINT"
    assert [r[0] for r in store.query("DESCRIBE dup_clusters")] == [
        "run_id",
        "sample_id",
        "cluster_id",
        "exact_cluster_id",
    ]
    run = _score(capsys, store)
    assert len(_counts(store, run)) == len(texts) and None not in _counts(store, run).values()


def test_a_failed_run_scored_afresh_drops_its_clusters(store, tmp_path, capsys):
    from core.scoring import finish_run

    _ingest(store, tmp_path, _planted())
    run = _score(capsys, store)
    assert _clusters(store, run)
    finish_run(store, run, "failed", "test", afresh=True)
    assert _clusters(store, run) == {} and _counts(store, run) == {}


# ---- Ray ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    import os
    import shutil
    import tempfile

    ray = pytest.importorskip("ray")
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


@pytest.mark.slow
def test_the_ray_path_signs_on_the_cluster_and_counts_the_same(ray_local, store, tmp_path, capsys):
    from core.ray_engine.signatures import sign_on_ray

    texts = _planted()
    _ingest(store, tmp_path, texts)
    chunks = [pa.table({"pos": [i, i + 1], "text": texts[i : i + 2]}) for i in range(0, 16, 2)]
    remote = {
        r["pos"]: r["signature"] for t in sign_on_ray(ray_local)(chunks) for r in t.to_pylist()
    }
    local = {r["pos"]: r["signature"] for t in sign_locally(chunks) for r in t.to_pylist()}
    assert remote == local and len(local) == 16 and remote[0] != remote[1]
    run = _score(capsys, store, "docs", "--engine", "ray")
    counts, clusters = _found(store)
    assert _counts(store, run) == counts and _clusters(store, run) == clusters
    assert store.query("SELECT engine FROM runs WHERE run_id = ?", [run])[0][0] == "ray"


def test_summary_largest_clusters_and_word_diff_for_explore(tmp_path):
    from core.duplicates import duplicate_summary, largest_clusters, word_diff
    from core.ingest import ingest_dataset
    from core.scoring import ScoreOptions, score_dataset
    from tests.conftest import write_jsonl

    long = " ".join(f"word{i}" for i in range(200))
    near = long.replace("word100", "changed")
    rows = [
        {"id": "a", "text": long},
        {"id": "b", "text": long},
        {"id": "c", "text": long},
        {"id": "d", "text": near},
        {"id": "e", "text": "something else entirely " * 10},
        {"id": "f", "text": "x y z"},
        {"id": "g", "text": "x y z"},
    ]
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_dataset(store, str(write_jsonl(tmp_path / "d.jsonl", rows)), "d", id_column="id")
    run = score_dataset(store, "d", ScoreOptions(model="none")).run_id
    s = duplicate_summary(store, run)
    assert (s.n_samples, s.exact_samples, s.exact_redundant, s.n_exact_groups) == (7, 5, 3, 2)
    assert (s.near_samples, s.near_redundant, s.n_clusters) == (6, 4, 2)
    assert s.exact_redundant_bytes == 2 * len(long) + len("x y z")
    top = largest_clusters(store, run, "near", limit=1)
    assert list(top["sample_id"]) == ["a", "b", "c", "d"] and set(top["size"]) == {4}
    assert list(largest_clusters(store, run, "exact", limit=5)["size"]) == [3, 3, 3, 2, 2]
    changed = [piece for piece, differs in word_diff(long, near) if differs]
    assert changed == ["changed"]
    assert "".join(piece for piece, _ in word_diff(long, near)) == near


def test_explore_shows_duplicates_and_filters_to_them(tmp_path, monkeypatch):
    from core.ingest import ingest_dataset
    from core.scoring import ScoreOptions, score_dataset
    from tests.conftest import write_jsonl
    from tests.helpers_pages import by_label, open_page

    long = " ".join(f"word{i}" for i in range(120))
    rows = [{"id": f"u{i}", "text": f"unique text number {i} " * 8} for i in range(12)]
    rows += [{"id": "a", "text": long}, {"id": "b", "text": long}]
    rows += [{"id": "c", "text": long.replace("word60", "changed")}]
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_dataset(store, str(write_jsonl(tmp_path / "d.jsonl", rows)), "d", id_column="id")
    score_dataset(store, "d", ScoreOptions(model="none"))
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    at = open_page("3_Explore.py")
    assert "Duplicates" in [h.value for h in at.subheader]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Samples with an exact copy"] == "2"
    assert metrics["Near dedup would prune"] == "2"
    marked = [m.value for m in at.markdown if "<mark>" in m.value]
    assert marked and "<mark>changed</mark>" in marked[0]
    by_label(at.checkbox, "Only samples with a duplicate (exact or near)").check().run()
    assert not at.exception
    listed = next(d.value for d in at.dataframe if "sample_id" in d.value.columns)
    assert sorted(listed["sample_id"]) == ["a", "b", "c"]
