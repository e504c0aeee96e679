"""UI latency as a user feels it: real Chromium, the real app, from input to a settled page.

Builds (or reuses) the synthetic store of benchmarks/ui_latency.py (N scored samples, a `source`
column), starts `streamlit run app.py` on it, and times in headless Debian Chromium:

- Explore's first render (a fresh tab on /Explore until its widgets settle), cold and warm;
- a page switch (clicking Explore / Prune & Export in the sidebar until the page settles);
- a slider move on Prune & Export (one ArrowRight on the ratio slider until the new count shows).

"Settled" means: the awaited text is on the page, no element is marked stale (Streamlit greys out
what a rerun has not redrawn yet) and the running indicator is gone. Prints a markdown table.

    .venv/bin/python benchmarks/ui_browser_latency.py [--samples 1000000] [--moves 15] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from ui_latency import build_store  # noqa: E402

from tests.helpers_browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    running_app,
    streamlit_command,
)

# True once the page has stopped rerunning: nothing stale, no running indicator.
SETTLED_JS = """() => !document.querySelector('[data-stale="true"]')
    && !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stSpinner"]')
    && !Array.from(document.querySelectorAll('[data-testid="stStatusWidget"]'))
        .some(e => /running/i.test(e.innerText))"""


def settle(page, text: str | None = None, timeout_ms: float = 120_000) -> None:
    if text:
        page.get_by_text(text, exact=False).first.wait_for(timeout=timeout_ms)
    page.wait_for_function(SETTLED_JS, polling="raf", timeout=timeout_ms)


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text()


def time_first_render(browser, url: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(f"{url}/Explore")
        settle(page, "Distributions")
        times.append((time.perf_counter() - start) * 1000)
        page.close()
    return times


def time_page_switches(page, n: int) -> list[float]:
    times = []
    for i in range(n):
        target, text = (
            ("Prune & Export", "Pruned samples") if i % 2 == 0 else ("Explore", "Distributions")
        )
        start = time.perf_counter()
        page.locator('[data-testid="stSidebarNav"]').get_by_text(target, exact=True).click()
        settle(page, text)
        times.append((time.perf_counter() - start) * 1000)
    return times


def time_slider_moves(page, n: int) -> list[float]:
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Prune & Export", exact=True).click()
    settle(page, "Pruned samples")
    thumb = page.locator('[data-testid="stSlider"]').first.get_by_role("slider")
    times = []
    for _ in range(n):
        before = metric_value(page, "Pruned samples")
        thumb.focus()
        start = time.perf_counter()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            """([label, before]) => {
                const m = Array.from(document.querySelectorAll('[data-testid="stMetric"]'))
                    .find(e => e.innerText.includes(label));
                const v = m && m.querySelector('[data-testid="stMetricValue"]');
                return v && v.innerText !== before;
            }""",
            arg=["Pruned samples", before],
            polling="raf",
            timeout=120_000,
        )
        settle(page)
        times.append((time.perf_counter() - start) * 1000)
    return times


def row(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return (
        f"| {name} | {len(times)} | {statistics.median(times):,.0f} | {p90:,.0f} | "
        f"{max(times):,.0f} |"
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
        # The first visit computes the run's ranking (then cached in the server process).
        renders = time_first_render(browser, url, 1 + args.renders)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        settle(page, "Datasets in this workspace")
        switches = time_page_switches(page, args.moves)
        moves = time_slider_moves(page, args.moves)
        browser.close()
    print(f"\n{args.samples:,} scored samples, ms from input to a settled page:\n")
    print("| what | n | median ms | p90 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    print(row("Explore, first render in a fresh tab (cold: ranking computed)", renders[:1]))
    print(row("Explore, first render in a fresh tab (warm)", renders[1:]))
    print(row("page switch (sidebar: Explore <-> Prune & Export)", switches))
    print(row("Prune & Export: one slider step (ArrowRight)", moves))


if __name__ == "__main__":
    main()
