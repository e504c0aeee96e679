"""The real app in a real browser: a stratified, deduplicating setting on the Prune page shows the
validation that backs it and how many duplicates it prunes, checked against direct computations.

Headless Debian Chromium driven by Playwright against `streamlit run app.py` on a store holding
real documents of the sample corpus (some copied) scored without a model, and one validation of
prune-low 0.2 within each source. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import pytest

from core import validate
from core.effects import effects
from core.prune import rule_selection
from core.rules import Rule
from core.scoring import ScoreOptions
from core.validation_spec import PRESETS, ValidateOptions, make_spec
from tests.conftest import corpus_texts
from tests.helpers_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    scored_app,
    skip_without_chromium,
)
from tests.test_validate import TEST_SETTINGS

SCORE = "word_entropy"

pytestmark = pytest.mark.slow

skip_without_chromium()


@pytest.fixture
def validated_app(tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "default", TEST_SETTINGS)
    rows = [
        {"id": r["id"], "text": r["text"][:600], "source": r["source"]} for r in corpus_texts(150)
    ]
    rows += [{**r, "id": f"copy-{r['id']}"} for r in rows[:20]]
    with scored_app(tmp_path, rows, ScoreOptions(model="none")) as (url, store):
        run_id = store.query("SELECT run_id FROM runs")[0][0]
        spec = make_spec(
            ValidateOptions(run_id, "prune-low", "0.2", score=SCORE, seeds=1, stratify="source")
        )
        validate.run_validation(store, spec)
        yield url, store, run_id, spec.validation_id


def test_prune_page_shows_the_validation_behind_a_stratified_setting(validated_app):
    from playwright.sync_api import expect, sync_playwright

    url, store, run_id, vid = validated_app
    heldout = effects(store, vid)
    heldout = heldout[heldout["eval_set"] == "heldout"].iloc[0]
    rule = Rule("prune-low", 0.2, stratify="source", dedup="exact")
    selection = rule_selection(store, run_id, SCORE, rule)[1]
    expect.set_options(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.locator("[data-testid=stSidebarNav]").get_by_text("Prune & Export", exact=True).click()
        expect(page.locator("[data-testid=stMetric]", has_text="Pruned samples")).to_be_visible()
        expect(page.get_by_role("combobox", name="Rank by")).to_have_value(SCORE)
        page.locator("[data-testid=stSelectbox]", has_text="Within each").click()
        page.get_by_role("option", name="source", exact=True).click()
        expect(page.get_by_text("No validation of this setting yet")).to_be_visible()
        thumb = page.locator("[data-testid=stSlider]", has_text="Prune the lowest").get_by_role(
            "slider"
        )
        thumb.focus()
        for _ in range(20):  # 20 steps of 0.5 %: 10 % -> 20 %
            page.keyboard.press("ArrowRight")
        evidence = page.locator("[data-testid=stMarkdownContainer]", has_text="Validated (")
        expect(evidence).to_contain_text(vid)
        expect(evidence).to_contain_text(f"{heldout['minus_random']:+.4f}")
        expect(evidence).to_contain_text(str(heldout["verdict"]))

        page.locator("[data-testid=stSelectbox]", has_text="Duplicates").click()
        page.get_by_role("option", name="Remove exact duplicates first").click()
        pruned = page.locator("[data-testid=stMetric]", has_text="Pruned samples")
        expect(pruned).to_contain_text(f"{selection.n_pruned:,}")
        expect(
            page.get_by_text(f"{selection.n_duplicates:,} of the pruned samples")
        ).to_be_visible()
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        page.screenshot(path=ARTIFACTS / "evidence-prune.png", full_page=True)
        browser.close()
