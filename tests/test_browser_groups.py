"""The real app in a real browser: group the Prune page by a column and read each group's pruned
share from the page, checked against a direct computation from the stored scores.

Headless Debian Chromium driven by Playwright against `streamlit run app.py` on a store holding
real documents of the sample corpus scored without a model. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import math
import time

import pytest

from core.scoring import ScoreOptions
from core.store import Store
from tests.conftest import corpus_texts
from tests.helpers_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    scored_app,
    skip_without_chromium,
)
from tests.test_prune import brute_force_pruned

N_DOCS = 120
SCORE = "word_entropy"

pytestmark = pytest.mark.slow

skip_without_chromium()

# The rows of the per-group table as the page's data grid lays them out for screen readers.
READ_GROUP_TABLE = """() => {
  for (const table of document.querySelectorAll('[data-testid=stDataFrame] table[role=grid]')) {
    const heads = [...table.querySelectorAll('th')].map(th => th.textContent.trim());
    if (!heads.includes('pruned share of samples')) continue;
    const rows = [...table.querySelectorAll('tbody tr')].map(
      tr => [...tr.querySelectorAll('td')].map(td => td.textContent.trim()));
    return {heads, rows};
  }
  return null;
}"""


@pytest.fixture
def grouped_app(tmp_path):
    rows = [
        {"id": r["id"], "text": r["text"][:2000], "source": r["source"]}
        for r in corpus_texts(N_DOCS)
    ]
    with scored_app(tmp_path, rows, ScoreOptions(model="none")) as (url, store):
        yield url, store, rows


def direct_shares(store: Store, rows: list[dict], ratio: float) -> dict[str, float]:
    """Each source's share of samples pruned by prune-low RATIO, from the stored scores alone."""
    stored = dict(store.query(f"SELECT sample_id, {SCORE} FROM scores"))
    pruned = brute_force_pruned(stored, "prune-low", ratio, 0.0)
    shares = {}
    for source in {r["source"] for r in rows}:
        ids = [r["id"] for r in rows if r["source"] == source]
        shares[source] = sum(i in pruned for i in ids) / len(ids)
    return shares


def read_shares(page, expected: dict[str, float], timeout: float = 60) -> dict[str, float]:
    """The page's per-group pruned shares, once they match EXPECTED (or whatever shows at the
    deadline): each slider step reruns the page, so the table settles after the last one."""
    deadline = time.monotonic() + timeout
    while True:
        found = page.evaluate(READ_GROUP_TABLE)
        shares = {}
        if found:
            col = found["heads"].index("pruned share of samples")
            shares = {row[0]: float(row[col]) for row in found["rows"] if len(row) > col}
        if _close(shares, expected) or time.monotonic() > deadline:
            return shares
        page.wait_for_timeout(250)


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], abs_tol=1e-9) for k in a)


def test_grouping_the_prune_page_shows_each_groups_pruned_share(grouped_app):
    from playwright.sync_api import expect, sync_playwright

    url, store, rows = grouped_app
    expect.set_options(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.set_default_timeout(60_000)
        page.goto(url)
        expect(page.locator("h1", has_text="infoprune")).to_be_visible()
        page.locator("[data-testid=stSidebarNav]").get_by_text("Prune & Export", exact=True).click()
        expect(page.locator("[data-testid=stMetric]", has_text="Pruned samples")).to_be_visible()
        expect(page.get_by_role("combobox", name="Rank by")).to_have_value(SCORE)
        page.locator("[data-testid=stSelectbox]", has_text="Group by").click()
        page.get_by_role("option", name="source", exact=True).click()
        expect(page.get_by_text("What each source loses")).to_be_visible()
        expected = direct_shares(store, rows, 0.1)
        assert read_shares(page, expected) == pytest.approx(expected)

        thumb = page.locator("[data-testid=stSlider]", has_text="Prune the lowest").get_by_role(
            "slider"
        )
        thumb.focus()
        for _ in range(50):  # 50 steps of 0.5 %: 10 % -> 35 %
            page.keyboard.press("ArrowRight")
        expected = direct_shares(store, rows, 0.35)
        assert read_shares(page, expected) == pytest.approx(expected)
        assert max(expected.values()) > min(expected.values())  # the groups do differ
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        page.screenshot(path=ARTIFACTS / "groups-prune.png", full_page=True)
        browser.close()
