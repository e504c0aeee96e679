"""UI latency as a user feels it: real Chromium, the real app, from input to a settled page.

Builds (or reuses) the synthetic store of benchmarks/ui_latency.py (N scored samples, a `source`
column), starts `streamlit run app.py` on it, and times in headless Debian Chromium:

- Explore's first render: a new tab on /Explore, cold (the server's caches empty) then warm, in one
  browser context (a browser that has opened the app before: its HTTP cache holds the app's
  scripts, as in a user's browser);
- a page switch (clicking Explore / Prune & Export in the sidebar);
- a slider move on Prune & Export (one ArrowRight on the ratio slider).

"Settled": the server has reported the run (or fragment run) that the input started as finished
(`script_finished` on the page's websocket), the awaited text shows, nothing is stale (greyed out
until a rerun redraws it), the running indicator is gone, and then the page's DOM has not changed
for QUIET_MS (charts, tables and lazily loaded components drawn). Its time is the input to the
page's last DOM change, both on the page's clock. Also printed: "run shown", the input to the
moment the run's end, its text and no stale element were first seen together; and "text shown",
what this benchmark measured until 2026-12-02 (the text with nothing stale: a page shows its text
before its run ends, and a fresh page has nothing stale). Prints a markdown table.

    .venv/bin/python benchmarks/ui_browser_latency.py [--samples 1000000] [--moves 15] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402
from ui_latency import build_store  # noqa: E402

from tests.helpers_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    running_app,
    streamlit_command,
)

QUIET_MS = 500
TIMEOUT_MS = 120_000
VIEWPORT = {"width": 1400, "height": 1000}

# A whole run, or a fragment's, that ran to its end (not one cut short by a rerun).
DONE = {
    ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY,
    ForwardMsg.ScriptFinishedStatus.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
}

# Every page records when its DOM last changed (page clock, ms since its navigation). Not counted:
# the hidden table in which a data grid mirrors its cells for screen readers, a moment after it
# has drawn them on its canvas: changes inside it, nor its insertion into (or removal from) the
# canvas.
LAST_CHANGE_JS = """
window.__lastChange = 0;
const grid = '[data-testid="stDataFrame"]';
const mirror = r => (r.target.nodeType === 1 ? r.target : r.target.parentElement)
    ?.closest(grid + ' table')
    || (r.type === 'childList' && r.target.nodeName === 'CANVAS' && r.target.closest(grid)
        && [...r.addedNodes, ...r.removedNodes].every(n => n.nodeName === 'TABLE'));
new MutationObserver(records => {
    if (records.some(r => !mirror(r))) window.__lastChange = performance.now();
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""

# Nothing stale, no running indicator (its text reads "Stop", its icon "Running..."), every
# Plotly chart drawn.
SHOWN_JS = """() => !document.querySelector('[data-stale="true"]')
    && !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]')
    && Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'))
        .every(e => e.querySelector('.main-svg'))"""
QUIET_JS = f"() => performance.now() - window.__lastChange >= {QUIET_MS}"
# What this benchmark waited for before 2026-12-02: the text shown and nothing stale (its check of
# the running indicator never matched, and a page shows its text before the run ends).
TEXT_JS = """text => document.body && document.body.innerText.includes(text)
    && !document.querySelector('[data-stale="true"]')"""


class Times(NamedTuple):
    settled: float  # to the page's last DOM change
    shown: float  # to the run's end shown (its text, nothing stale, no running indicator)
    text: float  # to the text shown with nothing stale (this benchmark's measure until 2026-12-02)


class Runs:
    """The script runs the server reports finished to one page, read from its websocket."""

    def __init__(self, page):
        self.page = page
        self.finished = 0
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        if isinstance(payload, str):
            return
        msg = ForwardMsg()
        msg.ParseFromString(payload)
        if msg.WhichOneof("type") == "script_finished" and msg.script_finished in DONE:
            self.finished += 1

    def now(self) -> float:
        return self.page.evaluate("performance.now()")

    def settle(self, since: float, before: int, text: str | None = None) -> Times:
        """The Times from SINCE (page clock), once a run that started after BEFORE finished
        runs has finished and the page has settled."""
        self.page.wait_for_function(TEXT_JS, arg=text or "", polling="raf", timeout=TIMEOUT_MS)
        text_shown = self.now() - since
        deadline = time.perf_counter() + TIMEOUT_MS / 1000
        while self.finished <= before:  # websocket events arrive while Playwright waits
            if time.perf_counter() > deadline:
                raise TimeoutError("no script run finished")
            self.page.wait_for_timeout(2)
        if text:
            self.page.get_by_text(text, exact=False).first.wait_for(timeout=TIMEOUT_MS)
        self.page.wait_for_function(SHOWN_JS, polling="raf", timeout=TIMEOUT_MS)
        shown = self.now() - since
        self.page.wait_for_function(QUIET_JS, polling=50, timeout=TIMEOUT_MS)
        return Times(self.page.evaluate("window.__lastChange") - since, shown, text_shown)


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text()


def time_first_render(context, url: str, repeat: int) -> list[Times]:
    times = []
    for _ in range(repeat):
        page = context.new_page()
        runs = Runs(page)
        page.goto(f"{url}/Explore")  # the page clock starts at this navigation
        times.append(runs.settle(0.0, 0, "Distributions"))
        page.close()
    return times


def time_page_switches(runs: Runs, n: int) -> list[Times]:
    times = []
    nav = runs.page.locator('[data-testid="stSidebarNav"]')
    for i in range(n):
        target, text = (
            ("Prune & Export", "Pruned samples") if i % 2 == 0 else ("Explore", "Distributions")
        )
        before, since = runs.finished, runs.now()
        nav.get_by_text(target, exact=True).click()
        times.append(runs.settle(since, before, text))
    return times


def time_slider_moves(runs: Runs, n: int) -> list[Times]:
    page = runs.page
    before, since = runs.finished, runs.now()
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Prune & Export", exact=True).click()
    runs.settle(since, before, "Pruned samples")
    thumb = page.locator('[data-testid="stSlider"]').first.get_by_role("slider")
    times = []
    for _ in range(n):
        shown = metric_value(page, "Pruned samples")
        thumb.focus()
        before, since = runs.finished, runs.now()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            """([label, before]) => {
                const m = Array.from(document.querySelectorAll('[data-testid="stMetric"]'))
                    .find(e => e.innerText.includes(label));
                const v = m && m.querySelector('[data-testid="stMetricValue"]');
                return v && v.innerText !== before;
            }""",
            arg=["Pruned samples", shown],
            polling="raf",
            timeout=TIMEOUT_MS,
        )
        times.append(runs.settle(since, before))
    return times


def row(name: str, times: list[Times]) -> str:
    settled = sorted(t.settled for t in times)
    p90 = settled[min(len(settled) - 1, int(round(0.9 * (len(settled) - 1))))]
    shown = statistics.median(t.shown for t in times)
    text = statistics.median(t.text for t in times)
    return (
        f"| {name} | {len(times)} | {statistics.median(settled):,.0f} | {p90:,.0f} | "
        f"{max(settled):,.0f} | {shown:,.0f} | {text:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--moves", type=int, default=15, help="slider moves and page switches")
    parser.add_argument("--renders", type=int, default=3, help="fresh-tab Explore renders")
    parser.add_argument("--keep", metavar="DIR", help="build the store here and keep it")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(args.keep or tempfile.mkdtemp(prefix="infoprune-browser-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "bench.duckdb"
    if not db.exists():
        started = time.perf_counter()
        build_store(db, args.samples)
        print(f"built {db} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "streamlit.log"
    with (
        running_app(streamlit_command(port, app_args=["--db", str(db)]), port, log=log),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(LAST_CHANGE_JS)
        # The first visit fills the server's caches and the browser's HTTP cache.
        renders = time_first_render(context, url, 1 + args.renders)
        page = context.new_page()
        runs = Runs(page)
        page.goto(url)
        runs.settle(0.0, 0, "Datasets in this workspace")
        switches = time_page_switches(runs, args.moves)
        moves = time_slider_moves(runs, args.moves)
        browser.close()
    print(f"\n{args.samples:,} scored samples, ms from input to a settled page:\n")
    print("| what | n | settled, median ms | p90 | max | run shown, median | text shown, median |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(row("Explore, first render in a new tab (cold: server caches empty)", renders[:1]))
    print(row("Explore, first render in a new tab (warm)", renders[1:]))
    print(row("page switch (sidebar: Explore <-> Prune & Export)", switches))
    print(row("Prune & Export: one slider step (ArrowRight)", moves))


if __name__ == "__main__":
    main()
