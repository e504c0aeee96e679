"""Explore in a real browser: a click on a histogram bar filters the ranked samples to its range.

AppTest cannot click a chart, so this drives `streamlit run app.py` in headless Debian Chromium,
reads the bar's range from the histogram Vega drew (its SVG) and the rows from the table.
"""

from __future__ import annotations

import re

import pytest

from core.scoring import ScoreOptions
from tests.conftest import corpus_texts
from tests.helpers_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    scored_app,
    skip_without_chromium,
)

N_DOCS = 40

pytestmark = pytest.mark.slow

skip_without_chromium()


@pytest.fixture
def explore_url(tmp_path, tiny_model_dir):
    rows = [
        {"id": r["id"], "text": r["text"][:800], "source": r["source"]}
        for r in corpus_texts(N_DOCS)
    ]
    options = ScoreOptions(model=str(tiny_model_dir), dtype="float32")
    with scored_app(tmp_path, rows, options) as (url, _store):
        yield url


def table_column(page, name: str) -> list[float]:
    """The values of column NAME in the rows the ranked-samples table shows."""
    from playwright.sync_api import expect

    grid = page.locator("[data-testid=stDataFrame]").last
    expect(grid.locator("[role=columnheader]", has_text=name)).to_have_count(1)
    expect(grid.locator("[role=gridcell]").first).to_be_attached()
    headers = grid.locator("[role=columnheader]").all_inner_texts()
    index = headers.index(name)
    values = []
    for row in grid.locator("[role=row]").all()[1:]:
        cells = row.locator("[role=gridcell]").all_inner_texts()
        if len(cells) == len(headers):
            values.append(float(cells[index]))
    return values


def test_clicking_a_histogram_bar_filters_the_ranked_samples(explore_url):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded machine can take seconds per rerun
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.set_default_timeout(60_000)
        page.goto(f"{explore_url}/Explore")
        expect(page.get_by_text(f"{N_DOCS} samples match", exact=False)).to_be_visible()
        chart = page.locator("[data-testid=stVegaLiteChart]").filter(has_text="bits per token")
        # Vega's SVG: one path per bar, labelled with its fields ("left: 2.5; samples: 3; ...").
        bars = chart.locator(
            "g.role-mark path[aria-roledescription='rect mark'][aria-label*=samples]"
        )
        expect(bars).to_have_count(60)
        labels = bars.evaluate_all("ps => ps.map(p => p.getAttribute('aria-label'))")
        drawn = [
            {
                k.strip(): float(v.replace(",", ""))
                for k, v in (f.split(":") for f in label.split(";"))
            }
            for label in labels
        ]
        k = max(range(60), key=lambda i: drawn[i]["samples"])
        count = int(drawn[k]["samples"])
        left, right = drawn[k]["left"], drawn[k]["right"]  # to 12 digits

        bars.nth(k).click(force=True)
        expect(page.get_by_text(f"{count} samples match the filters")).to_be_visible()
        expect(page.get_by_role("button", name=re.compile(r"≤ bits_per_token <|≤"))).to_be_visible()
        scores = table_column(page, "bits_per_token")
        assert 0 < len(scores) <= count
        slack = 1e-9 * max(abs(left), abs(right))
        assert all(left - slack <= s <= right + slack for s in scores), (left, right, scores)
        page.screenshot(path=ARTIFACTS / "e2e-explore-bar-clicked.png")

        # The same bar again drops the range (the chart is drawn afresh, with no selection).
        box = bars.nth(k).bounding_box()
        bars.nth(k).click(force=True)
        expect(page.get_by_text(f"{N_DOCS} samples match.", exact=False)).to_be_visible()

        # A drag across the bars 10 to 30 keeps the samples in their range.
        x10, x30 = box["x"] + (10 - k) * box["width"], box["x"] + (31 - k) * box["width"]
        y = box["y"] + box["height"] / 2
        page.mouse.move(x10 + 2, y)
        page.mouse.down()
        page.mouse.move(x30 - 2, y, steps=8)
        page.mouse.up()
        dragged = sum(int(drawn[i]["samples"]) for i in range(10, 31))
        expect(page.get_by_text(f"{dragged} samples match the filters")).to_be_visible()
        expect(page.get_by_role("button", name=re.compile(r"≤ bits_per_token <"))).to_be_visible()

        page.get_by_role("button", name="Clear all filters").click()
        expect(page.get_by_text(f"{N_DOCS} samples match.", exact=False)).to_be_visible()

        # The scatter is drawn once its section is opened, and stays open on a later visit.
        scatter = page.locator("[data-testid=stPlotlyChart]").filter(has_text="against")
        expect(scatter).to_have_count(0)
        page.get_by_text("Scatter: bits per token against length (tokens)").click()
        expect(scatter.locator(".main-svg").first).to_be_attached()
        expect(page.get_by_text("Click a point to open that sample", exact=False)).to_be_visible()
        nav = page.locator("[data-testid=stSidebarNav]")
        nav.get_by_text("Prune & Export", exact=True).click()
        expect(page.get_by_text("Pruned samples").first).to_be_visible()
        nav.get_by_text("Explore", exact=True).click()
        expect(scatter.locator(".main-svg").first).to_be_attached()
        page.screenshot(path=ARTIFACTS / "e2e-explore-scatter-opened.png", full_page=True)
        browser.close()
