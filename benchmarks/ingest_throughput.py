"""Ingest throughput and peak memory: the real `infoprune ingest` on generated JSONL, gzip, Parquet.

Run by hand (about a minute per GB and format on 2 cores); prints a markdown table:

    .venv/bin/python benchmarks/ingest_throughput.py --mb 100 1024

Streaming means peak RSS stays flat as the file grows, so pass two sizes and compare the rows.
MB/s is over the uncompressed JSONL size, so the three formats compare on the same data.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("jsonl", "jsonl.gz", "parquet")
ROWS_PER_CHUNK = 4096


def _sentence_pool(rng: np.random.Generator, n: int = 50000) -> list[str]:
    """Sentences of Zipf-distributed pseudo-words, some non-ASCII, so text compresses like prose."""
    letters = list("etaoinshrdlucmfwypvbgkjqxz") + ["é", "ß", "ø", "ж", "λ"]
    weights = np.array([1 / (i + 1) for i in range(len(letters))])
    weights /= weights.sum()
    vocab = [
        "".join(rng.choice(letters, size=rng.integers(1, 11), p=weights)) for _ in range(20000)
    ]
    ranks = np.minimum(rng.zipf(1.3, size=(n, 40)), len(vocab)) - 1
    pool = []
    for row, length in zip(ranks, rng.integers(5, 40, size=n), strict=True):
        words = [vocab[r] for r in row[:length]]
        pool.append(words[0].capitalize() + " " + " ".join(words[1:]) + rng.choice([".", "?", "!"]))
    return pool


def _documents(rng: np.random.Generator, pool: list[str], n: int) -> list[str]:
    """N documents of about 0.5-5 KB: sentences joined into paragraphs."""
    docs = []
    for target in rng.integers(500, 5000, size=n):
        parts, size = [], 0
        for k in rng.integers(0, len(pool), size=200):
            sentence = pool[k]
            parts.append(sentence)
            size += len(sentence) + 1
            if size >= target:
                break
            parts.append("\n\n" if rng.random() < 0.1 else " ")
        docs.append("".join(parts))
    return docs


def write_inputs(out_dir: Path, mb: int, seed: int = 0) -> dict[str, Path]:
    """The same MB of rows as JSONL, gzipped JSONL and Parquet, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    pool = _sentence_pool(rng)
    paths = {fmt: out_dir / f"bench-{mb}mb.{fmt}" for fmt in FORMATS}
    target = mb * 1_000_000
    written = row = 0
    with (
        open(paths["jsonl"], "wb") as raw,
        gzip.open(paths["jsonl.gz"], "wb", compresslevel=3) as gz,
        pq.ParquetWriter(
            paths["parquet"],
            pa.schema(
                [
                    ("id", pa.string()),
                    ("text", pa.string()),
                    ("url", pa.string()),
                    ("quality", pa.float64()),
                ]
            ),
            compression="zstd",
        ) as pw,
    ):
        while written < target:
            texts = _documents(rng, pool, ROWS_PER_CHUNK)
            ids = [f"doc-{row + i:09d}" for i in range(len(texts))]
            urls = [f"https://example.org/{rng.integers(1e6)}/{i}" for i in ids]
            quality = np.round(rng.random(len(texts)), 4).tolist()
            lines = [
                json.dumps({"id": i, "text": t, "url": u, "quality": q}, ensure_ascii=False)
                for i, t, u, q in zip(ids, texts, urls, quality, strict=True)
            ]
            data = ("\n".join(lines) + "\n").encode()
            raw.write(data)
            gz.write(data)
            pw.write_table(pa.table({"id": ids, "text": texts, "url": urls, "quality": quality}))
            written += len(data)
            row += len(texts)
    return paths


def run_ingest(path: Path, db: Path, name: str) -> dict:
    """One `infoprune ingest` in a child process: wall seconds, peak RSS and its report line."""
    cmd = [sys.executable, "-m", "core.cli", "ingest", str(path), "--name", name, "--db", str(db)]
    timer = Path("/usr/bin/time")
    if timer.exists():
        cmd = [str(timer), "-v", *cmd]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"ingest of {path} failed:\n{proc.stderr}")
    if timer.exists():
        kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    else:  # ru_maxrss of the largest child so far, in KB on Linux
        import resource

        kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "rss_mb": kb / 1024, "report": proc.stdout.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[1024], help="JSONL sizes to test")
    parser.add_argument("--path", help="folder for the inputs and store (default: a temp dir)")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    args = parser.parse_args()

    work = Path(args.path or tempfile.mkdtemp(prefix="infoprune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for mb in args.mb:
            started = time.perf_counter()
            paths = write_inputs(work, mb)
            jsonl_mb = paths["jsonl"].stat().st_size / 1e6
            took = time.perf_counter() - started
            print(f"generated {jsonl_mb:.0f} MB in {took:.0f} s", file=sys.stderr)
            for fmt in args.formats:
                db = work / f"bench-{mb}-{fmt}.duckdb"
                db.unlink(missing_ok=True)
                res = run_ingest(paths[fmt], db, "bench")
                print(res["report"], file=sys.stderr)
                rows.append((fmt, jsonl_mb, paths[fmt].stat().st_size / 1e6, res))
                db.unlink(missing_ok=True)
            for p in paths.values():
                p.unlink()
    finally:
        if not args.path:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{os.cpu_count()} CPUs, {sys.platform}\n")
    print("| format | JSONL MB | file MB | seconds | MB/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for fmt, jsonl_mb, file_mb, res in rows:
        print(
            f"| {fmt} | {jsonl_mb:.0f} | {file_mb:.0f} | {res['seconds']:.1f} "
            f"| {jsonl_mb / res['seconds']:.1f} | {res['rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
