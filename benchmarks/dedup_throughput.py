"""Throughput and peak memory of the duplicate pass (core/duplicates.py), and the MinHash libraries.

    .venv/bin/python benchmarks/dedup_throughput.py --mb 100 [1024] [--compare-libraries]

Builds a synthetic corpus (Zipf pseudo-words, 1-4 KB texts) with planted duplicates: 5 % exact
copies of an earlier text, 5 % near copies (one word replaced), ingests it into a scratch store,
then runs each step in a child process (peak RSS is the child's): the exact pass (DuckDB), the
signatures, the LSH + verification + components, the whole `find_duplicates`, and the write into
a run's rows. MB/s is UTF-8 text (the whole corpus; for signatures, its distinct texts) per second
of wall time and per second of CPU time of all threads. `--compare-libraries` signs the first
--library-mb MB of the same texts with each library and finds the pairs at 0.8 with its LSH
(needs `pip install datasketch`, which pulls scipy). `--path DIR` keeps corpora and stores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.duplicates import (  # noqa: E402
    BAND_ROWS,
    BANDS,
    NUM_PERM,
    SEED,
    THRESHOLD,
    Prepared,
    collect_signatures,
    find_duplicates,
    load_exact_groups,
    minhash_signatures,
    near_pairs,
    read_distinct_texts,
    shingle_hashes,
    sign_locally,
    write_duplicates,
)
from core.store import Store  # noqa: E402

VOCAB = 50_000
SHARE_EXACT, SHARE_NEAR = 0.05, 0.05


def make_corpus(path: Path, mb: int, seed: int = 0) -> dict:
    """Write ~MB of texts as Parquet (id, text); returns what was planted."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i:x}" for i in range(VOCAB)])
    p = 1 / np.arange(1, VOCAB + 1)
    p /= p.sum()
    texts: list[str] = []
    size = 0
    planted = {"exact": 0, "near": 0, "rows": 0}
    writer = None
    while size < mb * 1e6:
        batch = []
        for _ in range(2000):
            roll = rng.random()
            if texts and roll < SHARE_EXACT:
                batch.append(texts[rng.integers(len(texts))])
                planted["exact"] += 1
            elif texts and roll < SHARE_EXACT + SHARE_NEAR:
                base = texts[rng.integers(len(texts))].split(" ")
                base[rng.integers(len(base))] = "edited"
                batch.append(" ".join(base))
                planted["near"] += 1
            else:
                batch.append(" ".join(words[rng.choice(VOCAB, rng.integers(150, 600), p=p)]))
        texts = (texts + batch)[-20_000:]  # copies come from the recent past; bounded memory
        size += sum(len(t) for t in batch)
        ids = [f"doc-{planted['rows'] + i}" for i in range(len(batch))]
        table = pa.table({"id": ids, "text": batch})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        planted["rows"] += len(batch)
    writer.close()
    planted["mb"] = size / 1e6
    return planted


def child(step: str, db: str) -> dict:
    """Run one STEP in this process; time it and report this process's peak RSS."""
    store = Store(db)
    cpu, wall = time.process_time(), time.perf_counter()
    out: dict = {}
    if step == "exact":
        exact = load_exact_groups(store, "bench")
        out["distinct"] = int((exact.row_idx == exact.first_row).sum())
        out["exact_dups"] = int((exact.n_same > 1).sum())
    elif step in ("sign", "lsh"):
        exact = load_exact_groups(store, "bench")
        chunks = list(read_distinct_texts(store, "bench", exact))
        out["mb"] = sum(pc.sum(pc.binary_length(c["text"])).as_py() for c in chunks) / 1e6
        cpu, wall = time.process_time(), time.perf_counter()
        signatures, valid = collect_signatures(
            sign_locally(chunks), int((exact.row_idx == exact.first_row).sum())
        )
        if step == "lsh":
            del chunks
            cpu, wall = time.process_time(), time.perf_counter()
            out["pairs"] = sum(len(i) for i, _ in near_pairs(signatures, valid))
    elif step == "all":
        dups = find_duplicates(store, "bench")
        counts = dups.counts
        out["exact_dups"] = int(pc.sum(pc.greater(counts["dup_count"], 0)).as_py())
        out["near_dups"] = int(pc.sum(pc.greater(counts["near_dup_count"], 0)).as_py())
        out["clusters"] = len(set(dups.clusters["cluster_id"].to_pylist()))
    elif step == "write":
        dups = find_duplicates(store, "bench")
        cpu, wall = time.process_time(), time.perf_counter()
        with store.transaction() as con:
            out["missing"] = write_duplicates(con, "run-bench", Prepared(dups))
    out["cpu"] = time.process_time() - cpu
    out["wall"] = time.perf_counter() - wall
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def library_child(lib: str, path: str, mb: float) -> dict:
    """Sign the first MB of the corpus's texts with LIB and find the pairs at 0.8 with its LSH,
    keeping what a dedup pass keeps (signatures, index); times and the RSS they hold."""
    texts, size = [], 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=2000):
        texts += batch.column(0).to_pylist()
        size = sum(map(len, texts))
        if size >= mb * 1e6:
            break
    before = rss_mb()
    t = time.process_time()
    if lib == LIBRARIES[0]:
        signatures = np.concatenate(
            [minhash_signatures(texts[i : i + 4000])[0] for i in range(0, len(texts), 4000)]
        )
        signed = time.process_time()
        pairs = sum(len(i) for i, _ in near_pairs(signatures, np.ones(len(texts), bool)))
    elif lib == LIBRARIES[1]:
        import rensa

        hashes = []
        for text in texts:
            m = rensa.RMinHash(NUM_PERM, SEED)
            m.update(_shingle_strings(text))
            hashes.append(m)
        signed = time.process_time()
        lsh = rensa.RMinHashLSH(THRESHOLD, NUM_PERM, BANDS)
        for k, m in enumerate(hashes):
            lsh.insert(k, m)
        pairs = sum(
            sum(1 for j in lsh.query(m) if j > k and m.jaccard(hashes[j]) >= THRESHOLD)
            for k, m in enumerate(hashes)
        )
    else:
        from datasketch import MinHash, MinHashLSH

        hashes = []
        for i in range(0, len(texts), 4000):
            chunk = texts[i : i + 4000]
            if lib == LIBRARIES[2]:
                for text in chunk:
                    m = MinHash(num_perm=NUM_PERM, seed=1)
                    m.update_batch([s.encode() for s in _shingle_strings(text)])
                    hashes.append(m)
            else:
                flat, offsets = shingle_hashes(chunk)
                for a, b in zip(offsets[:-1], offsets[1:], strict=True):
                    m = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=lambda x: x & 0xFFFFFFFF)
                    m.update_batch(flat[int(a) : int(b)].tolist())
                    hashes.append(m)
        signed = time.process_time()
        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, BAND_ROWS))
        for k, m in enumerate(hashes):
            lsh.insert(k, m)
        pairs = sum(
            sum(1 for j in lsh.query(m) if j > k and m.jaccard(hashes[j]) >= THRESHOLD)
            for k, m in enumerate(hashes)
        )
    done = time.process_time()
    return {
        "mb": size / 1e6,
        "sign_cpu": signed - t,
        "lsh_cpu": done - signed,
        "rss_mb": rss_mb() - before,
        "pairs": pairs,
    }


def rss_mb() -> float:
    """This process's resident memory now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _shingle_strings(text: str) -> list[str]:
    """The same shingles as core.duplicates, as strings: what the libraries' own APIs take."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < 5:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + 5]) for i in range(len(words) - 4)]


LIBRARIES = [
    "infoprune: numpy shingles, rensa bulk matrix, numpy LSH",
    "rensa: RMinHash per text (str shingles), RMinHashLSH",
    "datasketch: MinHash per text (sha1 of str shingles), MinHashLSH",
    "datasketch: MinHash per text from infoprune's shingle hashes, MinHashLSH",
]


def spawn(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def setup(tmp: Path, mb: int) -> tuple[str, dict, Path]:
    """The corpus of MB and its store in TMP, built unless an earlier run left them there."""
    from core.ingest import ingest_dataset

    path = tmp / f"corpus-{mb}.parquet"
    db = str(tmp / f"bench-{mb}.duckdb")
    made = tmp / f"corpus-{mb}.json"
    if made.exists():
        return db, json.loads(made.read_text()), path
    planted = make_corpus(path, mb)
    store = Store(db)
    ingest_dataset(store, str(path), "bench", id_column="id")
    with store.transaction() as con:  # a done run with empty score rows, for the write step
        con.execute(
            "INSERT INTO runs (run_id, dataset, fingerprint, engine, model, settings, config_key, "
            "status, n_total, created_at) SELECT 'run-bench', name, fingerprint, 'none', 'none', "
            "'{}', 'bench', 'done', n_samples, now() FROM datasets WHERE name = 'bench'"
        )
        con.execute(
            "INSERT INTO scores (run_id, sample_id) SELECT 'run-bench', sample_id FROM samples"
        )
    made.write_text(json.dumps(planted))
    return db, planted, path


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--library":
        print(json.dumps(library_child(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[100])
    parser.add_argument("--path", help="keep the corpora and stores here, for the next run")
    parser.add_argument("--compare-libraries", action="store_true")
    parser.add_argument("--library-mb", type=float, default=20.0)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = args.path or stack.enter_context(tempfile.TemporaryDirectory())
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for mb in args.mb:
            t = time.perf_counter()
            db, planted, path = setup(Path(tmp), mb)
            print(
                f"\ncorpus {planted['mb']:.0f} MB, {planted['rows']:,} texts "
                f"({planted['exact']:,} exact and {planted['near']:,} near copies planted), "
                f"ready in {time.perf_counter() - t:.0f} s"
            )
            print(
                "| step | MB | wall s | CPU s | MB/s wall | MB/s per CPU-s | peak RSS MB | found |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---|")
            for step in ("exact", "sign", "lsh", "all", "write"):
                r = spawn("--child", step, db)
                size = r.pop("mb", planted["mb"])
                found = {
                    k: v for k, v in r.items() if k not in ("cpu", "wall", "rss_mb", "missing")
                }
                print(
                    f"| {step} | {size:.0f} | {r['wall']:.2f} | {r['cpu']:.2f} | "
                    f"{size / r['wall']:.1f} | {size / max(r['cpu'], 1e-9):.1f} | "
                    f"{r['rss_mb']:.0f} | {found or ''} |"
                )
        if args.compare_libraries:  # on the smallest corpus: its first texts are the others'
            compare_libraries(Path(tmp) / f"corpus-{min(args.mb)}.parquet", args.library_mb)


def compare_libraries(path: Path, mb: float) -> None:
    print(f"\nThe same {mb:g} MB of texts, 128 permutations, 32 bands x 4")
    print("| library | signing MB per CPU-s | LSH + verify CPU s | RSS held MB | pairs |")
    print("|---|---:|---:|---:|---:|")
    for lib in LIBRARIES:
        r = spawn("--library", lib, str(path), str(mb))
        print(
            f"| {lib} | {r['mb'] / r['sign_cpu']:.1f} | {r['lsh_cpu']:.2f} | "
            f"{r['rss_mb']:.0f} | {r['pairs']:,} |"
        )


if __name__ == "__main__":
    main()
