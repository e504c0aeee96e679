"""Scoring started from the Score page, page open, against `infoprune score` on the same store.

Ingests the first N documents of the corpus into a fresh temporary store once, then alternates
(page, CLI, CLI, page, ...) K times, each run on its own copy of that store:

- page: `streamlit run app.py` on the copy, headless Debian Chromium (never a downloaded browser)
  opens the Score page, keeps the dataset `docs` and the shipped probe (the default choices),
  clicks "Start scoring" and stays open, visible, until the page says the run finished; then the
  server stops, and once the background job has exited the run's row is read from the store;
- CLI: `infoprune score --db COPY --dataset docs --model sample_data/probe`, then the same.

tokens/s and seconds are the run's own (the `runs` table: scoring time, model load excluded).
Also printed: wall seconds from the click (or the command's start) to the run shown done (or the
command's exit), the CPU seconds that the app's server and the browser used meanwhile, and those
of every other process on the machine (other work: a run it hit is not a fair comparison).
Run by hand (~1 min per run on 2 cores, 2,500 documents are ~2 M tokens); prints a markdown table:

    .venv/bin/python benchmarks/score_page_vs_cli.py [--docs 2500] [--repeats 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    running_app,
    streamlit_command,
)

_SCRIPT = Path(sys.executable).with_name("infoprune")
INFOPRUNE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "core.cli"]
VIEWPORT = {"width": 1400, "height": 1000}
RUN_TIMEOUT_S = 1800
TICK = os.sysconf("SC_CLK_TCK")
# The run done (finished_notice), or its job stopped with an error (ids are in <code>: no backticks
# in the text). textContent of the alerts only: polling it forces no layout on the page.
DONE_JS = """() => [...document.querySelectorAll('[data-testid="stAlert"]')]
    .some(e => /Run run-\\w+ finished|Job \\S+ stopped/.test(e.textContent))
    || !!document.querySelector('[data-testid="stException"]')"""


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds used, command line) of every process now running."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, cmd)
    return out


def descendants(procs: dict[int, tuple[int, float, str]], root: int) -> set[int]:
    found, todo = set(), [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, _, _) in procs.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def cpu_split(server_pid: int) -> tuple[float, float]:
    """CPU seconds so far of the app's server (itself, not its jobs) and of this script's
    Chromium processes."""
    procs = processes()
    server = procs.get(server_pid, (0, 0.0, ""))[1]
    mine = descendants(procs, os.getpid())
    browser = sum(procs[p][1] for p in mine if "chromium" in procs[p][2])
    return server, browser


class OtherLoad:
    """CPU seconds used by processes other than this script and what it started, sampled every
    second while a run goes on: other work on the machine, which slows whichever side it hits."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> OtherLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        seen: dict[int, float] = {}
        first = True
        while True:
            procs = processes()
            mine = descendants(procs, os.getpid()) | {os.getpid()}
            for pid, (_, cpu, _) in procs.items():
                if pid in mine:
                    continue
                if pid in seen or not first:  # a process started meanwhile counts in full
                    self.seconds += cpu - seen.get(pid, 0.0)
                seen[pid] = cpu
            first = False
            if self._stop.wait(1.0):
                return


def read_run(db: Path) -> dict:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT run_id, status, tokens_per_s, seconds, tokens_done, n_done, settings, error "
            "FROM runs ORDER BY created_at"
        ).fetchall()
    finally:
        con.close()
    if len(rows) != 1:
        raise SystemExit(f"{db}: expected one run, found {len(rows)}: {rows}")
    keys = ["run_id", "status", "tokens_per_s", "seconds", "tokens", "samples", "settings", "error"]
    run = dict(zip(keys, rows[0], strict=True))
    if run["status"] != "done":
        raise SystemExit(f"{db}: run {run['run_id']} is {run['status']}: {run['error']}")
    return run


def wait_gone(pids: set[int], timeout: float = 120) -> None:
    """Wait until PIDS have exited (zombies count as exited)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state == "Z":
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"background job {pid} still running after {timeout:.0f} s")


def selectbox(page, label: str):
    """The input of the selectbox labelled LABEL (its value is the choice shown)."""
    box = page.locator('[data-testid="stSelectbox"]', has_text=label).first
    return box.locator("input").first


def page_run(db: Path, log: Path, shot: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_app(streamlit_command(port), port, env={"INFOPRUNE_DB": str(db)}, log=log) as srv:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            page.goto(f"{url}/Score")
            start = page.get_by_role("button", name="Start scoring")
            start.wait_for()
            dataset = selectbox(page, "Dataset")
            if dataset.input_value() != "docs":
                dataset.click()
                page.get_by_role("option", name="docs", exact=True).click()
                page.wait_for_load_state("networkidle")
            model = selectbox(page, "Model").input_value()
            if not model.startswith("Shipped probe"):
                raise SystemExit(f"the Score page's default model is not the probe: {model}")
            page.wait_for_load_state("networkidle")
            server0, browser0 = cpu_split(srv.pid)
            t0 = time.perf_counter()
            start.click()
            page.wait_for_function(DONE_JS, polling=1000, timeout=RUN_TIMEOUT_S * 1000)
            wall = time.perf_counter() - t0
            server1, browser1 = cpu_split(srv.pid)
            visible = page.evaluate("document.visibilityState")
            text = page.locator("body").inner_text()
            if shot:
                page.screenshot(path=shot, full_page=True)
            browser.close()
        if not re.search(r"Run run-\w+ finished", text):
            raise SystemExit(f"the page did not show the run done:\n{text[-2000:]}")
        procs = processes()
        jobs = {pid for pid in descendants(procs, srv.pid) if "core.cli" in procs[pid][2]}
    wait_gone(jobs)  # the job writes its end after the run row says done
    run = read_run(db)
    run.update(wall=wall, server_cpu=server1 - server0, browser_cpu=browser1 - browser0)
    run["visible"] = visible
    return run


def cli_run(db: Path, probe: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*INFOPRUNE, "score", "--db", str(db), "--dataset", "docs", "--model", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"infoprune score failed:\n{proc.stderr[-2000:]}")
    run = read_run(db)
    run.update(wall=wall, server_cpu=None, browser_cpu=None, visible="")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "sample_data" / "corpus.parquet"))
    ap.add_argument("--probe", default="sample_data/probe", help="the CLI's --model")
    ap.add_argument("--docs", type=int, default=2500, help="first N documents (default 2500)")
    ap.add_argument("--repeats", type=int, default=2, help="page/CLI pairs (default 2)")
    ap.add_argument("--keep", help="work in this folder and keep it (stores, server logs, shots)")
    args = ap.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="ip-page-vs-cli-"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base.duckdb"
    base.unlink(missing_ok=True)
    subprocess.run(
        [*INFOPRUNE, "ingest", args.corpus, "--name", "docs", "--db", str(base)]
        + ["--limit", str(args.docs)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    load_before = os.getloadavg()
    results: list[tuple[int, str, dict]] = []
    for k in range(args.repeats):
        # Alternating order (page, CLI, CLI, page, ...): a drift in load hits both sides alike.
        for side in ("page", "cli") if k % 2 == 0 else ("cli", "page"):
            db = work / f"{side}-{k}.duckdb"
            db.unlink(missing_ok=True)
            shutil.copy(base, db)
            with OtherLoad() as other:
                if side == "page":
                    shot = work / f"page-{k}.png" if args.keep else None
                    run = page_run(db, work / f"server-{k}.log", shot)
                else:
                    run = cli_run(db, args.probe)
            run["other_cpu"] = other.seconds
            results.append((k, side, run))
            print(
                f"run {k} {side}: {run['tokens_per_s']:,.0f} tokens/s, {run['seconds']:.1f} s",
                file=sys.stderr,
            )
            if not args.keep:
                db.unlink()
    load_after = os.getloadavg()
    if not args.keep:
        shutil.rmtree(work)
    if len({str(r["settings"]) for _, _, r in results}) != 1:
        print("\nWARNING: the runs' settings differ:", {s: r["settings"] for _, s, r in results})

    print(
        f"\nFirst {args.docs:,} documents of {Path(args.corpus).name}, model {args.probe}; "
        f"CPU: {cpu_name()} ({os.cpu_count()} cores); load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}\n"
    )
    print(
        "| # | started from | tokens | tokens/s | scoring s | wall s | server CPU s | "
        "browser CPU s | other processes' CPU s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for k, side, r in results:
        cpu = f"{r['server_cpu']:.1f} | {r['browser_cpu']:.1f}" if side == "page" else "— | —"
        name = f"Score page ({r['visible']})" if side == "page" else "`infoprune score`"
        print(
            f"| {k + 1} | {name} | {r['tokens']:,} | {r['tokens_per_s']:,.0f} | "
            f"{r['seconds']:.1f} | {r['wall']:.1f} | {cpu} | {r['other_cpu']:.1f} |"
        )
    med = {
        side: statistics.median(r["tokens_per_s"] for _, s, r in results if s == side)
        for side in ("page", "cli")
    }
    secs = {
        side: statistics.median(r["seconds"] for _, s, r in results if s == side)
        for side in ("page", "cli")
    }
    print(
        f"\nMedian tokens/s: page {med['page']:,.0f} ({secs['page']:.1f} s), CLI "
        f"{med['cli']:,.0f} ({secs['cli']:.1f} s); ratio page/CLI = {med['page'] / med['cli']:.3f}"
    )


if __name__ == "__main__":
    main()
