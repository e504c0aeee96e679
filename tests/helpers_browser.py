"""The real app as a server process and headless Debian Chromium, for the real-browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ROOT, write_jsonl

ARTIFACTS = ROOT / "test-artifacts"  # screenshots of the browser tests (gitignored)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def skip_without_chromium() -> None:
    """Skip the calling test module where Debian's Chromium is missing (never in CI: it fails)."""
    import pytest

    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip(
            f"{CHROMIUM} is not installed (`make browser` installs Debian's chromium)",
            allow_module_level=True,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_command(port: int, address: str = "127.0.0.1", app_args: Sequence[str] = ()):
    """`streamlit run app.py` as users start it; the rest comes from .streamlit/config.toml."""
    return (
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
        + ["--server.address", address, "--server.headless", "true"]
        + ["--browser.gatherUsageStats", "false"]
        + (["--", *app_args] if app_args else [])
    )


@contextmanager
def running_app(
    command: Sequence[str],
    port: int,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 60,
    cwd: Path = ROOT,
) -> Iterator[subprocess.Popen]:
    """Run COMMAND from CWD (the repository root; a benchmark may serve another source tree)
    until its port accepts connections; stop it after.

    Output goes to LOG (for a failing test to show, or a test to read), else nowhere.
    """
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        list(command), cwd=cwd, env=dict(os.environ, **(env or {})), stdout=out, stderr=out
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    shown = log.read_text(errors="replace")[-2000:] if log else ""
                    raise RuntimeError(f"streamlit did not start\n{shown}") from None
                time.sleep(0.2)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if log:
            out.close()


@contextmanager
def scored_app(tmp_path: Path, rows: list[dict], options) -> Iterator[tuple[str, object]]:
    """The app serving a store that holds ROWS as dataset 'docs' (ids from `id`), scored with
    OPTIONS (a ScoreOptions): yields (the app's URL, the store)."""
    from core.ingest import ingest_dataset
    from core.scoring import score_dataset
    from core.store import Store

    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    ingest_dataset(store, str(write_jsonl(tmp_path / "docs.jsonl", rows)), "docs", id_column="id")
    score_dataset(store, "docs", options)
    port = free_port()
    env = {"INFOPRUNE_DB": str(store.path)}
    with running_app(streamlit_command(port), port, env=env, log=tmp_path / "log"):
        yield f"http://127.0.0.1:{port}", store
