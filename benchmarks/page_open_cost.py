"""What a page left open costs: CPU seconds per minute of the app's server and of the browser.

A page that refreshes itself (a fragment with `run_every`) keeps the server and the browser busy
for as long as it stays open; on two cores a job started later pays for that time (its threads
wait for one another: see benchmarks/score_page_vs_cli.py). This measures it with no job running.

Builds a store once (or reuses the one in --keep): the first --docs documents of the sample
corpus, scored with the shipped probe, and one quick validation of that run, so that the
Validate page draws its chart and tables. Then, --rounds times, for each source tree (--trees,
alternating; default this one) and each page (--pages), starts `streamlit run app.py` from that
tree on a copy of the store, opens the page in headless Debian Chromium (never a downloaded
browser), lets it settle, and counts the CPU seconds that the server and Chromium use over
--seconds with nothing clicked. Prints a markdown table:

    .venv/bin/python benchmarks/page_open_cost.py [--seconds 60] [--rounds 2] [--trees OLD,.] \
        [--pages Score,Validate,Explore] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from score_page_vs_cli import INFOPRUNE, cpu_name, cpu_split  # noqa: E402

from tests.helpers_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    running_app,
    streamlit_command,
)

VIEWPORT = {"width": 1400, "height": 1000}
SETTLE_S = 5  # after the page's network is idle: its last charts drawn, its first refresh due


def build_store(db: Path, docs: int, probe: str) -> None:
    """Ingest, score and validate (quick, one ratio) into DB, as a user would from the CLI."""

    def cli(*argv: str) -> str:
        done = subprocess.run(
            [*INFOPRUNE, *argv, "--db", str(db)], cwd=ROOT, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"infoprune {argv[0]} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    corpus = str(ROOT / "sample_data" / "corpus.parquet")
    cli("ingest", corpus, "--name", "docs", "--limit", str(docs))
    cli("score", "--dataset", "docs", "--model", probe)
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        (run_id,) = con.execute("SELECT run_id FROM runs").fetchone()
    finally:
        con.close()
    cli("validate", "--run", run_id, "--rule", "prune-low", "--ratios", "0.2", "--quick")


def page_cost(tree: Path, db: Path, page_name: str, seconds: float, log: Path) -> dict:
    """Serve TREE's app on DB, open PAGE_NAME, and count the CPU seconds used while it is open."""
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {"INFOPRUNE_DB": str(db), "PYTHONPATH": str(tree)}
    command = streamlit_command(port)  # its app.py is the tree's: the server runs in the tree
    with running_app(command, port, env=env, log=log, cwd=tree) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)
        page.goto(f"http://127.0.0.1:{port}/{page_name}")
        page.wait_for_load_state("networkidle")
        page.locator('[data-testid="stMainBlockContainer"] h1').first.wait_for()
        time.sleep(SETTLE_S)
        server0, browser0 = cpu_split(server.pid)
        start = time.monotonic()
        time.sleep(seconds)
        server1, browser1 = cpu_split(server.pid)
        wall = time.monotonic() - start
        exceptions = page.locator('[data-testid="stException"]').count()
        browser.close()
    if exceptions:
        raise SystemExit(f"{page_name} of {tree} shows an exception: see {log}")
    per_minute = 60 / wall
    return {
        "server": (server1 - server0) * per_minute,
        "browser": (browser1 - browser0) * per_minute,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="how long each page stays open")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--trees", help="source trees to serve, alternating (before,after)")
    ap.add_argument("--pages", default="Score,Validate", help="page URLs (default Score,Validate)")
    ap.add_argument("--docs", type=int, default=500, help="first N corpus documents (default 500)")
    ap.add_argument("--probe", default="sample_data/probe")
    ap.add_argument("--keep", help="build the store here and keep it (and the server logs)")
    args = ap.parse_args()

    trees = [Path(t).resolve() for t in args.trees.split(",")] if args.trees else [ROOT]
    pages = args.pages.split(",")
    work = Path(args.keep or tempfile.mkdtemp(prefix="ip-page-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base.duckdb"
    if not base.exists():
        t = time.perf_counter()
        build_store(base, args.docs, args.probe)
        print(f"built {base} in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    load_before = os.getloadavg()
    costs: dict[tuple[str, str], list[dict]] = {}
    for k in range(args.rounds):
        order = trees if k % 2 == 0 else trees[::-1]  # a drift in load hits both trees alike
        for tree in order:
            for page_name in pages:
                db = work / "served.duckdb"
                shutil.copy(base, db)
                log = work / f"server-{tree.name}-{page_name}-{k}.log"
                cost = page_cost(tree, db, page_name, args.seconds, log)
                costs.setdefault((str(tree), page_name), []).append(cost)
                print(
                    f"round {k + 1} {tree.name} {page_name}: server {cost['server']:.2f}, "
                    f"browser {cost['browser']:.2f} CPU s/min",
                    file=sys.stderr,
                )
    load_after = os.getloadavg()
    if not args.keep:
        shutil.rmtree(work)

    print(
        f"\n{args.docs:,} documents scored and validated; each page open {args.seconds:.0f} s, "
        f"{args.rounds} round(s); CPU: {cpu_name()} ({os.cpu_count()} cores); load average "
        f"(1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}\n"
    )
    print("| tree | page | server CPU s per minute | browser CPU s per minute | together |")
    print("|---|---|---:|---:|---:|")
    for (tree, page_name), runs in costs.items():
        server = statistics.median(c["server"] for c in runs)
        browser = statistics.median(c["browser"] for c in runs)
        print(
            f"| {Path(tree).name} | {page_name} | {server:.2f} | {browser:.2f} | "
            f"{server + browser:.2f} |"
        )


if __name__ == "__main__":
    main()
