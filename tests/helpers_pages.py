"""Pages run headlessly through Streamlit's AppTest, for the page tests."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def run_app(path: str = "app.py", timeout: float = 120) -> AppTest:
    """Run the script at PATH (from the repository root) once; it must not raise."""
    at = AppTest.from_file(str(ROOT / path), default_timeout=timeout).run()
    assert not at.exception, at.exception[0].message
    return at


def open_page(name: str) -> AppTest:
    """Run the page pages/NAME once; it must not raise."""
    return run_app(f"pages/{name}", timeout=60)


def by_label(elements, label: str):
    """The widget among ELEMENTS that carries LABEL (positions change as pages grow)."""
    return next(e for e in elements if e.label == label)
