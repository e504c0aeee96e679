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


def build_tiny_model(out_dir: Path, texts: list[str], n_positions: int = 64, seed: int = 0) -> Path:
    """A random 2-layer GPT-2 with a byte-level BPE trained on TEXTS, saved like any HF model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(hf_tok),
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(out_dir)
    hf_tok.save_pretrained(out_dir)
    return out_dir


def corpus_texts(n: int, offset: int = 0) -> list[dict]:
    """N real documents from the bundled sample corpus, spread over its sources."""
    import pyarrow.parquet as pq

    table = pq.read_table(SAMPLE_CORPUS, columns=["id", "text", "source"])
    rows = table.to_pylist()
    step = max(1, len(rows) // (n + offset))
    return rows[offset * step :: step][:n]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    texts = [r["text"] for r in corpus_texts(200)]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model", texts)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
