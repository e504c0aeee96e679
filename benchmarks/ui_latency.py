"""Server-side latency of the Explore and Prune pages' queries on a large synthetic run.

Builds a temporary store with N scored samples (~1 KB of text each, a metadata table, a finished
run with synthetic scores), then times each query the pages make and prints a markdown table.

    .venv/bin/python benchmarks/ui_latency.py [--samples 1000000] [--repeat 5] [--keep DIR]

Budget (issue "Explore, prune, export"): one slider move <= 150 ms, 1M rows to Parquet <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from core.explore import load_histogram, load_samples, load_scatter, load_summary
from core.export import export_subset
from core.prune import load_ranking, prune_preview
from core.rules import Rule
from core.store import Store

SLIDER_RATIOS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]


def build_store(path: Path, n: int) -> tuple[Store, str]:
    """A dataset of N samples of 32 random hex words (~1 KB) and a finished run scoring them."""
    store = Store(path)
    columns = [
        {"name": "id", "type": "int64"},
        {"name": "text", "type": "string"},
        {"name": "source", "type": "string"},
    ]
    with store.transaction() as con:
        con.execute(
            "INSERT INTO samples SELECT 'bench', i::VARCHAR, i, "
            "array_to_string(list_transform(range(8 + i % 49), "
            "lambda j: md5((i * 64 + j)::VARCHAR)), ' '), 0 FROM range(?) t(i)",
            [n],
        )
        con.execute("UPDATE samples SET n_bytes = strlen(text)")
        con.execute(
            "CREATE TABLE meta_bench AS SELECT i::VARCHAR AS __sample_id, i AS id, "
            "'source-' || (i % 7) AS source FROM range(?) t(i)",
            [n],
        )
        total_bytes = con.execute("SELECT sum(n_bytes) FROM samples").fetchall()[0][0]
        con.execute(
            "INSERT INTO datasets VALUES ('bench', 'synthetic', 'synthetic', 'text', 'id', ?, ?, "
            "0, 0, ?, ?, 'meta_bench', 'fp-bench', now())",
            [n, n, total_bytes, json.dumps(columns)],
        )
        con.execute(
            "INSERT INTO runs (run_id, dataset, fingerprint, engine, model, model_hash, settings, "
            "config_key, status, n_total, n_done, created_at, finished_at) VALUES "
            "('run-bench', 'bench', 'fp-bench', 'local', 'synthetic', 'h', '{}', 'k', 'done', "
            "?, ?, now(), now())",
            [n, n],
        )
        # bits/token ~ N(3, 0.5) with a heavy low tail (boilerplate); tokens ~ bytes / 4.
        con.execute(
            "INSERT INTO scores (run_id, sample_id, n_bytes, n_tokens, bits_total, bits_per_token, "
            "bits_per_byte) SELECT 'run-bench', sample_id, n_bytes, n_bytes // 4, "
            "bpt * (n_bytes // 4), bpt, bpt * (n_bytes // 4) / n_bytes FROM (SELECT sample_id, "
            "n_bytes, CASE WHEN hash(row_idx) % 20 = 0 THEN 0.5 + random() "
            "ELSE 3 + 0.5 * sqrt(-2 * ln(random())) * cos(2 * pi() * random()) END AS bpt "
            "FROM samples)"
        )
    return store, "run-bench"


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(median ms, max ms, last result) over REPEAT calls."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", metavar="DIR", help="build the store here and keep it")
    args = parser.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="infoprune-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "bench.duckdb"
    started = time.perf_counter()
    if db.exists():
        store, run = Store(db), "run-bench"
    else:
        store, run = build_store(db, args.samples)
    print(
        f"store: {db} ({db.stat().st_size / 1e9:.2f} GB), built in "
        f"{time.perf_counter() - started:.0f} s\n"
    )
    score = "bits_per_token"
    rows: list[tuple[str, float, float]] = []

    def record(name: str, fn, repeat: int = args.repeat):
        median, worst, result = timed(fn, repeat)
        rows.append((name, median, worst))
        return result

    def open_close():
        with store.connect():
            pass

    record("open + close the store (one connection)", open_close)
    start = time.perf_counter()
    load_ranking(store, run, score)
    rows.append(
        (
            "ranking of the run by a score, first time (then cached)",
            (time.perf_counter() - start) * 1000,
            (time.perf_counter() - start) * 1000,
        )
    )
    record(
        "cached ranking lookup (checks the run is unchanged)",
        lambda: load_ranking(store, run, score),
    )

    moves = []
    for rule in [Rule("prune-low", r) for r in SLIDER_RATIOS] + [
        Rule("keep-middle", 0.1, 0.2),
        Rule("prune-high", None, 0.3),
        Rule("prune-low", 3.0, by="threshold"),
    ]:
        moves.append(timed(lambda rule=rule: prune_preview(store, run, score, rule), args.repeat))
    rows.append(
        (
            "**slider move** (Prune page): counts, shares, cuts, histogram, borderline and "
            f"random pruned samples with text, kept-tokens curve ({len(moves)} positions)",
            statistics.median(m[0] for m in moves),
            max(m[1] for m in moves),
        )
    )
    record(
        "Explore histogram in DuckDB, 60 bins (cached per run and score in the UI)",
        lambda: load_histogram(store, run, score, bins=60),
    )
    record("Explore histogram, 60 bins, log x", lambda: load_histogram(store, run, score, 60, True))
    record(
        "summary: count, mean, std, 7 quantiles of 5 scores",
        lambda: load_summary(
            store, run, ["bits_per_token", "bits_total", "bits_per_byte", "n_tokens", "n_bytes"]
        ),
    )
    record(
        "scatter: 50,000-point uniform sample",
        lambda: load_scatter(store, run, "n_tokens", "bits_per_token"),
    )
    record(
        "lowest 20 samples with metadata and text",
        lambda: load_samples(store, run, score, limit=20),
    )
    record(
        "highest 20 samples, page 50",
        lambda: load_samples(store, run, score, highest=True, limit=20, offset=980),
    )

    out = tmp / "export.parquet"
    n_export = {}

    def export_all():
        result = export_subset(store, run, score, Rule("prune-low", 0.0), out, overwrite=True)
        n_export["rows"] = result.n_rows

    record("export all rows to Parquet", export_all, repeat=1)
    rows[-1] = (f"export {n_export['rows']:,} rows to Parquet", rows[-1][1], rows[-1][2])

    def export_kept_jsonl():
        export_subset(
            store,
            run,
            score,
            Rule("prune-low", 0.2),
            tmp / "kept.jsonl",
            fmt="jsonl",
            overwrite=True,
            with_scores=True,
        )

    record("export the kept 80 % to JSONL with scores", export_kept_jsonl, repeat=1)

    print(f"{args.samples:,} scored samples, median / max of {args.repeat} runs (ms)\n")
    print("| query | median ms | max ms |\n|---|---:|---:|")
    for name, median, worst in rows:
        print(f"| {name} | {median:,.1f} | {worst:,.1f} |")


if __name__ == "__main__":
    main()
