"""Throughput of the model-free measures, alone and in a whole `infoprune score --model none` run.

    .venv/bin/python benchmarks/measures_throughput.py [--corpus sample_data/corpus.parquet]

MB/s is UTF-8 text per second of CPU time (all threads; for the whole run, of the `infoprune`
process including its start-up), so it reads as MB/s per core and holds up on a busy machine;
wall-clock MB/s is printed beside it. Each figure is the best of --repeat tries.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from core.cli import main as cli
from core.corpus import count_words, load_corpus_stats
from core.datasets import get_dataset
from core.measures.base import Batch
from core.measures.gzip_ratio import GzipBitsPerByte
from core.measures.word_entropy import WordEntropy
from core.store import Store

ROOT = Path(__file__).resolve().parent.parent
INFOPRUNE = str(Path(sys.executable).parent / "infoprune")
BATCH = 2000  # texts per compute() call, about what a model-free run commits at a time


def cpu_seconds() -> float:
    """CPU time of this process and of the child processes it waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn, repeat: int) -> tuple[float, float]:
    """Best (CPU seconds, wall seconds) of REPEAT calls."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        cpu, wall = cpu_seconds(), time.perf_counter()
        fn()
        best = min(best, (cpu_seconds() - cpu, time.perf_counter() - wall))
    return best


def batches(texts: list[str]) -> list[Batch]:
    out = []
    for i in range(0, len(texts), BATCH):
        chunk = texts[i : i + BATCH]
        out.append(Batch(chunk, [len(t.encode()) for t in chunk], model_scores=None))
    return out


def run_cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        if cli(argv) != 0:
            raise SystemExit(f"infoprune {' '.join(argv)} failed")
    return out.getvalue().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT / "sample_data" / "corpus.parquet"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    texts = pq.read_table(args.corpus, columns=["text"]).column("text").to_pylist()
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"corpus: {args.corpus} — {len(texts):,} texts, {mb:.1f} MB of UTF-8 text")

    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.duckdb")
        run_cli(["ingest", args.corpus, "--name", "sample", "--id-column", "id", "--db", db])
        store = Store(db)
        info = get_dataset(store, "sample")

        def load_uncached() -> None:
            with store.transaction() as con:
                con.execute("DELETE FROM word_counts")
            load_corpus_stats(store, info)

        def whole_run(cached: bool) -> None:
            # As users run it, in a process of its own. A finished run with the same configuration
            # would be reused, so start from none.
            with store.transaction() as con:
                con.execute("DELETE FROM scores")
                con.execute("DELETE FROM runs")
                if not cached:
                    con.execute("DELETE FROM word_counts")
            subprocess.run(
                [INFOPRUNE, "score", "--dataset", "sample", "--model", "none", "--db", db],
                check=True,
                capture_output=True,
            )

        word_entropy, gzip = WordEntropy(), GzipBitsPerByte()
        stats = load_corpus_stats(store, info)
        cases = [
            ("word_entropy: counting words in memory", lambda: count_words(texts, Counter())),
            ("word_entropy: load_corpus_stats() (read samples, count, cache)", load_uncached),
            (
                "word_entropy: load_corpus_stats() with counts cached",
                lambda: load_corpus_stats(store, info),
            ),
            (
                "word_entropy: compute()",
                lambda: [word_entropy.compute(b, stats) for b in batches(texts)],
            ),
            (
                "gzip_bits_per_byte: compute()",
                lambda: [gzip.compute(b, None) for b in batches(texts)],
            ),
            ("`infoprune score --model none`, counting words", lambda: whole_run(cached=False)),
            ("`infoprune score --model none`, counts cached", lambda: whole_run(cached=True)),
        ]
        rows = [(label, timed(fn, args.repeat)) for label, fn in cases]

    width = max(len(r[0]) for r in rows)
    print(f"\n| {'what':<{width}} | MB/s per core (CPU time) | MB/s wall | CPU s | wall s |")
    print(f"|{'-' * (width + 2)}|---:|---:|---:|---:|")
    for label, (cpu, wall) in rows:
        print(f"| {label:<{width}} | {mb / cpu:,.1f} | {mb / wall:,.1f} | {cpu:.2f} | {wall:.2f} |")


if __name__ == "__main__":
    main()
