"""Ingest on the Data page in a real browser: after one ingest, a second file can be added.

The success banner of an ingest is shown once, then gone on the next rerun; "Add a dataset" sat
right below it, so its position changed and Streamlit drew it afresh, collapsed: picking a second
file closed the section and hid its preview, name and Ingest button.
"""

from __future__ import annotations

import pytest

from core.store import Store
from tests.conftest import write_jsonl
from tests.helpers_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    running_app,
    skip_without_chromium,
    streamlit_command,
)

pytestmark = pytest.mark.slow

PREVIEWED = """stem => [...document.querySelectorAll("input[aria-label='Name']")]
    .some(e => e.value === stem && !e.closest('[data-stale="true"]'))"""
SETTLED = """() => !document.querySelector('[data-stale="true"]')
    && !document.querySelector('[data-testid="stStatusWidgetRunningIcon"]')"""

skip_without_chromium()


def test_a_second_file_can_be_added_right_after_an_ingest(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    store = Store(tmp_path / "ws.duckdb")
    files = [
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": f"{name} text {i}"} for i in range(5)])
        for name in ("first", "second")
    ]
    port = free_port()
    with (
        running_app(
            streamlit_command(port),
            port,
            env={"INFOPRUNE_DB": str(store.path)},
            log=tmp_path / "log",
        ),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/Data")
        section = page.locator("[data-testid=stExpander]").filter(has_text="Add a dataset").first
        upload = section.locator("input[type=file]").first
        path_field = section.locator("input[aria-label='Path, glob or hub id']:visible")
        ingest = section.get_by_role("button", name="Ingest", exact=True)
        for path in files:
            expect(section.locator("summary").first).to_be_visible(timeout=60_000)
            if not path_field.count():  # closed (the first time: the store is not empty)
                section.locator("summary").first.click()
            upload.set_input_files(str(path))
            # This file's preview is drawn (its default name), and the rerun has ended: no element
            # left stale, so each control below is there once.
            page.wait_for_function(PREVIEWED, arg=path.stem, timeout=60_000)
            page.wait_for_function(SETTLED, timeout=60_000)
            # The section stays open: its Ingest button shows for the new file.
            expect(ingest.first).to_be_visible(timeout=30_000)
            ingest.first.click()
            expect(page.get_by_text(f"ingested '{path.stem}'").first).to_be_visible(timeout=60_000)
        names = {r[0] for r in store.query("SELECT name FROM datasets")}
        assert {"first", "second"} <= names  # beside the sample corpus of the first start
        browser.close()
