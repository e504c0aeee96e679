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

from core.explore import (
    SampleFilter,
    ScoreRange,
    load_group_summary,
    load_histogram,
    load_samples,
    load_scatter,
    load_summary,
)
from core.export import export_subset
from core.groups import GroupBy, group_kept_curve, group_options, group_table, load_groups
from core.prune import load_ranking, prune_preview, select
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


HISTOGRAMS = ["bits_per_token", "bits_total", "bits_per_byte", "n_tokens"]
SUMMARY = ["bits_per_token", "bits_total", "bits_per_byte", "n_tokens", "n_bytes"]


def filter_change(store: Store, run: str, f: SampleFilter, by: GroupBy | None = None) -> None:
    """What Explore recomputes when a bar of bits_per_token is clicked: the other histograms, the
    summary, the scatter and the first page of the list, filtered (the clicked chart is cached)."""
    for score in HISTOGRAMS[1:]:
        load_histogram(store, run, score, 60, False, f, by)
    if by is None:
        load_summary(store, run, SUMMARY, f)
    else:
        load_group_summary(store, run, "bits_per_token", by, f)
    load_scatter(
        store, run, "n_tokens", "bits_per_token", filters=f.without_ranges("bits_per_token"), by=by
    )
    load_samples(store, run, "bits_per_token", filters=f, limit=20)


def explore_filter_rows(store: Store, run: str, repeat: int, rows: list) -> None:
    """Explore's filtered queries: a clicked bar, the same grouped, a text search."""
    edges = load_histogram(store, run, "bits_per_token").edges
    bars = [
        SampleFilter(ranges=(ScoreRange("bits_per_token", edges[i], edges[i + 1], False),))
        for i in (10, 20, 25, 30, 35, 40, 50)
    ]
    clicks = [timed(lambda f=f: filter_change(store, run, f), repeat) for f in bars]
    rows.append(
        (
            "**filter change** (Explore): a histogram bar clicked — 3 other histograms, summary of "
            f"5 scores, scatter, first 20 ranked samples, all filtered ({len(bars)} bars)",
            statistics.median(c[0] for c in clicks),
            max(c[1] for c in clicks),
        )
    )
    by = GroupBy("source")
    load_groups(store, "bench", by)  # its first time is a row of its own
    grouped = [timed(lambda f=f: filter_change(store, run, f, by), repeat) for f in bars[:3]]
    rows.append(
        (
            "**filter change, grouped by `source`**: the same, each histogram and the scatter "
            "split by group, the summary per group",
            statistics.median(c[0] for c in grouped),
            max(c[1] for c in grouped),
        )
    )
    start = time.perf_counter()
    load_samples(store, run, "bits_per_token", filters=SampleFilter(text="abc1"))
    ms = (time.perf_counter() - start) * 1000
    rows.append(("text search, first time: one scan of ~1 GB of texts (then kept)", ms, ms))
    with_text = [
        timed(
            lambda f=f: filter_change(store, run, SampleFilter(text="abc1", ranges=f.ranges)),
            repeat,
        )
        for f in bars[:3]
    ]
    rows.append(
        (
            "filter change with that text search on (its matches kept)",
            statistics.median(c[0] for c in with_text),
            max(c[1] for c in with_text),
        )
    )


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

    def once(name: str, fn, *fn_args):
        """Time one call (what is cached after its first call)."""
        start = time.perf_counter()
        result = fn(*fn_args)
        ms = (time.perf_counter() - start) * 1000
        rows.append((name, ms, ms))
        return result

    def open_close():
        with store.connect():
            pass

    record("open + close the store (one connection)", open_close)
    once("ranking of the run by a score, first time (then cached)", load_ranking, store, run, score)
    record(
        "cached ranking lookup (checks the run is unchanged)",
        lambda: load_ranking(store, run, score),
    )

    rules = [Rule("prune-low", r) for r in SLIDER_RATIOS] + [
        Rule("keep-middle", 0.1, 0.2),
        Rule("prune-high", None, 0.3),
        Rule("prune-low", 3.0, by="threshold"),
    ]
    moves = []
    for rule in rules:
        moves.append(timed(lambda rule=rule: prune_preview(store, run, score, rule), args.repeat))
    rows.append(
        (
            "**slider move** (Prune page): counts, shares, cuts, histogram, borderline and "
            f"random pruned samples with text, kept-tokens curve ({len(moves)} positions)",
            statistics.median(m[0] for m in moves),
            max(m[1] for m in moves),
        )
    )
    once("group-by options of the dataset, first time (then cached)", group_options, store, "bench")
    by = GroupBy("source")
    groups = once(
        "the samples' groups by a column, first time (then cached)", load_groups, store, "bench", by
    )
    ranking = load_ranking(store, run, score)
    once(
        "the ranking regrouped, first time (then cached)",
        group_table,
        ranking,
        select(ranking, rules[0]),
        groups,
    )
    record(
        "cached groups lookup (checks the dataset is unchanged)",
        lambda: load_groups(store, "bench", by),
    )
    grouped = [
        timed(lambda rule=rule: group_table(ranking, select(ranking, rule), groups), args.repeat)
        for rule in rules
    ]
    rows.append(
        (
            f"**slider move, grouped**: the per-group table ({len(groups.labels)} groups, "
            f"{len(rules)} positions)",
            statistics.median(m[0] for m in grouped),
            max(m[1] for m in grouped),
        )
    )
    curves = [
        timed(lambda rule=rule: group_kept_curve(ranking, rule, groups), args.repeat)
        for rule in rules
    ]
    rows.append(
        (
            "per-group kept-tokens curve (22 points per group)",
            statistics.median(m[0] for m in curves),
            max(m[1] for m in curves),
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

    explore_filter_rows(store, run, args.repeat, rows)

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
