"""The real app in a real browser: every page opens, a ratio slider moves the preview, export works.

Headless Debian Chromium driven by Playwright against `streamlit run app.py` on a store holding a
small run scored with a tiny model. Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import math
import re

import pyarrow.parquet as pq
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
PAGES = ["Data", "Score", "Explore", "Prune & Export", "Compare measures", "Validate"]

pytestmark = pytest.mark.slow

skip_without_chromium()


@pytest.fixture
def app_url(tmp_path, tiny_model_dir):
    rows = [
        {"id": r["id"], "text": r["text"][:800], "source": r["source"]}
        for r in corpus_texts(N_DOCS)
    ]
    options = ScoreOptions(model=str(tiny_model_dir), dtype="float32")
    with scored_app(tmp_path, rows, options) as (url, _store):
        yield url, tmp_path


def metric_value(page, label: str) -> str:
    metric = page.locator("[data-testid=stMetric]", has_text=label).first
    return metric.locator("[data-testid=stMetricValue]").inner_text()


def test_every_page_opens_and_the_slider_drives_preview_and_export(app_url):
    from playwright.sync_api import expect, sync_playwright

    url, tmp_path = app_url
    expect.set_options(timeout=30_000)  # a loaded CI machine can take seconds per rerun
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(30_000)
        page.goto(url)
        expect(page.locator("h1", has_text="infoprune")).to_be_visible()
        nav = page.locator("[data-testid=stSidebarNav]")
        for name in PAGES:
            nav.get_by_text(name, exact=True).click()
            expect(page.locator("h1", has_text=name.split(" ")[0])).to_be_visible()
            page.wait_for_load_state("networkidle")
            expect(page.locator("[data-testid=stException]")).to_have_count(0)
            slug = re.sub(r"\W+", "-", name)
            page.screenshot(path=ARTIFACTS / f"e2e-{slug}.png")

        nav.get_by_text("Prune & Export", exact=True).click()
        expect(page.locator("[data-testid=stMetric]", has_text="Pruned samples")).to_be_visible()
        assert metric_value(page, "Pruned samples") == str(math.floor(0.1 * N_DOCS + 0.5))
        thumb = page.locator("[data-testid=stSlider]", has_text="Prune the lowest").get_by_role(
            "slider"
        )
        thumb.focus()
        for _ in range(20):  # 20 steps of 0.5 %: 10 % -> 20 %
            page.keyboard.press("ArrowRight")
        expected = math.floor(0.2 * N_DOCS + 0.5)
        expect(
            page.locator("[data-testid=stMetric]", has_text="Pruned samples").locator(
                "[data-testid=stMetricValue]"
            )
        ).to_have_text(str(expected))
        assert metric_value(page, "Kept share of samples") == f"{1 - expected / N_DOCS:.1%}"
        page.screenshot(path=ARTIFACTS / "e2e-prune-after-slider.png", full_page=True)

        out = tmp_path / "kept.parquet"
        box = page.get_by_role("textbox", name="Write to")
        box.fill(str(out))
        box.press("Enter")
        page.wait_for_load_state("networkidle")
        page.get_by_role("button", name="Export").click()
        expect(page.get_by_text(f"exported {N_DOCS - expected} kept samples")).to_be_visible()
        page.screenshot(path=ARTIFACTS / "e2e-export.png")
        browser.close()
    assert pq.read_table(out).num_rows == N_DOCS - expected
