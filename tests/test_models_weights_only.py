"""GPT-2 checkpoints read from their files alone (no transformers model code) score the same."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from core.engine import EngineSettings, Scorer, naive_score
from core.models import Gpt2Weights, PlainTokenizer, load_model

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "sample_data" / "probe"


@pytest.fixture(scope="module")
def texts():
    corpus = pq.read_table(ROOT / "sample_data" / "corpus.parquet", columns=["text"])
    some = corpus.column("text").to_pylist()[::400]
    return [
        *some,
        "",
        "a",
        "  two  spaces\tand\ttabs\n\n",
        "Zürich — “quotes” 🙂 日本語",
        "<|endoftext|>",
    ]


def test_plain_tokenizer_gives_transformers_ids(texts):
    plain = load_model(str(PROBE), weights_only=True).tokenizer
    assert isinstance(plain, PlainTokenizer)
    hf = AutoTokenizer.from_pretrained(PROBE)
    assert plain(texts).input_ids == hf(texts, add_special_tokens=False).input_ids
    assert plain(texts[0]).input_ids == hf(texts[0], add_special_tokens=False).input_ids
    assert (plain.bos_token_id, plain.eos_token_id) == (hf.bos_token_id, hf.eos_token_id)


@pytest.mark.parametrize("tied", [True, False])
def test_weights_only_scores_equal_the_transformers_model(tmp_path, texts, tied):
    if tied:
        folder = PROBE
    else:  # an untied head, saved as transformers saves it ("transformer." prefixes)
        torch.manual_seed(0)
        cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64, vocab_size=8192)
        cfg.tie_word_embeddings = False
        GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
        AutoTokenizer.from_pretrained(PROBE).save_pretrained(tmp_path)
        folder = tmp_path
    lean = load_model(str(folder), weights_only=True)
    assert isinstance(lean.model, Gpt2Weights)
    full = load_model(str(folder))
    assert lean.model_hash == full.model_hash
    settings = EngineSettings(window=64, stride=32, dtype="float32")
    got = Scorer(lean.model, lean.tokenizer, settings).score_texts(texts)
    want = Scorer(full.model, full.tokenizer, settings).score_texts(texts)
    assert [g.n_tokens for g in got] == [w.n_tokens for w in want]
    for g, w in zip(got, want, strict=True):
        assert g.bits_total == pytest.approx(w.bits_total, rel=1e-6, abs=1e-6)
    oracle = naive_score(full.model, full.tokenizer, texts[1], 64, 32)
    assert got[1].bits_total == pytest.approx(oracle.bits_total, rel=1e-4)


def test_other_models_still_load_through_transformers(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=8192,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(PROBE).save_pretrained(tmp_path)
    assert type(load_model(str(tmp_path), weights_only=True).model).__name__ == "LlamaForCausalLM"


def test_weights_only_loading_imports_no_transformers():
    code = (
        "import sys\n"
        "from core.models import load_model\n"
        f"lm = load_model({str(PROBE)!r}, weights_only=True)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
