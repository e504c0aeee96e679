"""The real app in a real browser: kept and pruned exported together from the Prune & Export page,
with names that follow the settings and manifests that name each other.

Headless Debian Chromium driven by Playwright against `streamlit run app.py`. Screenshots go to
test-artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

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

pytestmark = pytest.mark.slow

skip_without_chromium()


@pytest.fixture
def app(tmp_path):
    rows = [{"id": r["id"], "text": r["text"][:800]} for r in corpus_texts(N_DOCS)]
    with scored_app(tmp_path, rows, ScoreOptions(model="none")) as app:  # model-free: seconds
        yield app


def test_kept_and_pruned_exported_together_with_matching_names_and_manifests(app):
    from playwright.sync_api import expect, sync_playwright

    url, store = app
    expect.set_options(timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.set_default_timeout(30_000)
        page.goto(url)
        nav = page.locator("[data-testid=stSidebarNav]")
        nav.get_by_text("Prune & Export", exact=True).click()
        pruned_metric = page.locator("[data-testid=stMetric]", has_text="Pruned samples")
        expect(pruned_metric).to_be_visible()

        thumb = page.locator("[data-testid=stSlider]", has_text="Prune the lowest").get_by_role(
            "slider"
        )
        thumb.focus()
        for _ in range(20):  # 20 steps of 0.5 %: 10 % -> 20 %
            page.keyboard.press("ArrowRight")
        n_pruned = math.floor(0.2 * N_DOCS + 0.5)
        expect(pruned_metric.locator("[data-testid=stMetricValue]")).to_have_text(str(n_pruned))

        box = page.get_by_role("textbox", name="Write to")
        kept_name = "docs-word_entropy-prune-low-0.2-kept.parquet"
        expect(box).to_have_value(str(store.path.parent / "exports" / kept_name))
        page.get_by_text("Both (two files)", exact=True).click()
        pruned_path = store.path.parent / "exports" / kept_name.replace("-kept", "-pruned")
        expect(page.get_by_text(str(pruned_path))).to_be_visible()
        page.wait_for_load_state("networkidle")

        page.get_by_role("button", name="Export", exact=True).click()
        done = page.get_by_text(f"exported {N_DOCS - n_pruned} kept samples")
        expect(done).to_be_visible()
        assert f"{n_pruned} pruned samples" in done.inner_text()
        page.screenshot(path=ARTIFACTS / "export-kept-and-pruned.png", full_page=True)
        browser.close()

    kept_path = pruned_path.with_name(kept_name)
    kept, pruned = pq.read_table(kept_path), pq.read_table(pruned_path)
    assert (kept.num_rows, pruned.num_rows) == (N_DOCS - n_pruned, n_pruned)
    assert not set(kept.column("id").to_pylist()) & set(pruned.column("id").to_pylist())
    manifests = [
        json.loads(Path(f"{p}.manifest.json").read_text()) for p in (kept_path, pruned_path)
    ]
    for manifest, path, part, other in zip(
        manifests,
        (kept_path, pruned_path),
        ("kept", "pruned"),
        (pruned_path, kept_path),
        strict=True,
    ):
        assert manifest["output"]["path"] == str(path) and manifest["output"]["part"] == part
        assert manifest["output"]["pair"]["path"] == str(other)
        assert manifest["score"] == "word_entropy"
        assert manifest["rule"]["kind"] == "prune-low" and manifest["rule"]["low"] == 0.2
        assert manifest["dataset"]["store"] == str(store.path.resolve())
    assert manifests[0]["output"]["pair"]["rows_sha256"] == manifests[1]["output"]["rows_sha256"]
