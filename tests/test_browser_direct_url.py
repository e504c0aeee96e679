"""A page URL opened first on a fresh server: the right store, the app's own navigation.

Streamlit runs a page file directly (without app.py) when the first request of a fresh server is
for a page URL; `--db` given after `--` and the app's navigation used to be lost then: the page read
the default store and the sidebar listed the files of pages/ ("app", "Prune and Export").
"""

from __future__ import annotations

import pytest

from core.ingest import ingest_dataset
from core.scoring import ScoreOptions, score_dataset
from core.store import Store
from tests.conftest import corpus_texts, write_jsonl
from tests.helpers_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    running_app,
    skip_without_chromium,
    streamlit_command,
)

pytestmark = pytest.mark.slow

skip_without_chromium()


def test_a_page_url_opened_first_uses_the_db_argument_and_the_app_navigation(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    store = Store(tmp_path / "elsewhere.duckdb")
    rows = [{"id": r["id"], "text": r["text"][:300]} for r in corpus_texts(30)]
    ingest_dataset(store, str(write_jsonl(tmp_path / "d.jsonl", rows)), "mine", id_column="id")
    score_dataset(store, "mine", ScoreOptions(model="none"))
    port = free_port()
    command = streamlit_command(port, app_args=["--db", str(store.path)])
    with (
        running_app(command, port, env={"INFOPRUNE_DB": ""}, log=tmp_path / "log"),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/Explore")
        # The run's caption names this store's dataset, not the default store's.
        expect(page.get_by_text("Dataset mine").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("30 samples").first).to_be_visible()
        nav = page.locator("[data-testid=stSidebarNav]")
        expect(nav.get_by_text("Prune & Export", exact=True)).to_be_visible()
        expect(nav.get_by_text("app", exact=True)).to_have_count(0)
        assert page.url.rstrip("/").endswith("/Explore")
        browser.close()
