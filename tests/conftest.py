"""Shared fixtures: a fresh store per test, and small real text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.store import Store

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = ROOT / "sample_data" / "corpus.parquet"


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "ws.duckdb", lock_timeout=30)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Tests never touch the user's workspace, and inductor/HF caches stay inside tmp.
    monkeypatch.delenv("INFOPRUNE_DB", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
