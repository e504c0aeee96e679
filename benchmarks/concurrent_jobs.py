"""Scoring beside other scoring: one `infoprune score` alone, then two at once, per OpenMP setting.

Run by hand (a few minutes on 2 cores; a setting that makes the pair crawl is cut off by
--timeout and reported as such); prints a markdown table of the runs' stored tokens/s:

    .venv/bin/python benchmarks/concurrent_jobs.py --settings default GOMP_SPINCOUNT=10000

`default` runs the CLI as it is (which sets GOMP_SPINCOUNT=10000 itself unless told otherwise);
`GOMP_SPINCOUNT=300000` is libgomp's own default.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core.ingest import ingest_dataset  # noqa: E402
from core.store import Store  # noqa: E402

CLI = [sys.executable, "-m", "core.cli"]


def start_score(db: Path, model: str, limit: int, env: dict) -> subprocess.Popen:
    argv = ["score", "--dataset", "sample", "--model", model, "--limit", str(limit)]
    return subprocess.Popen(
        [*CLI, *argv, "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )


def tokens_per_s(db: Path) -> float | None:
    rows = Store(db).query("SELECT tokens_per_s FROM runs WHERE status = 'done'")
    return rows[0][0] if rows else None


def measure(stores, model, limit_alone, limit_pair, env, timeout) -> tuple:
    """tokens/s alone, then of each of two runs at once (None where a run did not finish)."""
    alone = start_score(stores[0], model, limit_alone, env)
    alone.wait()
    pair = [start_score(db, model, limit_pair, env) for db in stores[1:3]]
    for proc in pair:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return tokens_per_s(stores[0]), *(tokens_per_s(db) for db in stores[1:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(ROOT / "sample_data" / "corpus.parquet"))
    ap.add_argument("--model", default=str(ROOT / "sample_data" / "probe"))
    ap.add_argument("--limit-alone", type=int, default=1500, help="documents for the lone run")
    ap.add_argument("--limit-pair", type=int, default=400, help="documents for each of the two")
    ap.add_argument("--timeout", type=float, default=120, help="seconds before a pair is cut off")
    ap.add_argument(
        "--settings",
        nargs="+",
        default=["default", "GOMP_SPINCOUNT=300000", "OMP_WAIT_POLICY=PASSIVE"],
        help="`default`, or VAR=VALUE environment settings to compare",
    )
    args = ap.parse_args()

    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="ip-concurrent-"))
    ingested = workdir / "ingested.duckdb"
    ingest_dataset(Store(ingested), args.corpus, "sample", id_column="id")
    for setting in args.settings:
        env = {
            k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
        }
        if setting != "default":
            name, value = setting.split("=", 1)
            env[name] = value
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            # Fresh copies of one ingested store: no earlier run can be reused.
            stores = [Path(tmp) / f"ws{i}.duckdb" for i in range(3)]
            for db in stores:
                shutil.copy(ingested, db)
            rows.append(
                (
                    setting,
                    *measure(
                        stores, args.model, args.limit_alone, args.limit_pair, env, args.timeout
                    ),
                )
            )

    shutil.rmtree(workdir)

    def fmt(x):
        return "did not finish" if x is None else f"{x:,.0f}"

    print(f"\nmodel {args.model}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}\n")
    print("| setting | alone tok/s | two at once, each tok/s |")
    print("|---|---:|---:|")
    for setting, alone, a, b in rows:
        print(f"| {setting} | {fmt(alone)} | {fmt(a)} / {fmt(b)} |")


if __name__ == "__main__":
    main()
