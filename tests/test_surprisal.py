"""Per-token surprisal: the pieces rebuild the text and the bits add up to the run's number."""

from __future__ import annotations

import pytest

from core.engine import naive_score
from core.models import load_model
from core.surprisal import surprisal_html, token_surprisal, total_bits

TEXTS = [
    "def f(x):\n    return x * 2  # doubles\n",
    "Crème brûlée — 東京 🚀 naïve façade, twice: 東京 🚀.",
    "a",
]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.mark.parametrize("text", TEXTS)
def test_bits_add_up_to_the_windowed_score_and_pieces_to_the_text(lm, text):
    pieces = token_surprisal("", text, window=8, stride=3, loaded=lm)
    assert "".join(p for p, _ in pieces) == text
    assert all(p for p, _ in pieces) and all(b is not None and b > 0 for _, b in pieces)
    ref = naive_score(lm.model, lm.tokenizer, text, 8, 3)
    assert total_bits(pieces) == pytest.approx(ref.bits_total, rel=1e-5)


def test_max_tokens_gives_the_same_bits_for_the_first_tokens(lm):
    text = TEXTS[0] * 3
    full = token_surprisal("", text, window=16, stride=8, loaded=lm)
    first = token_surprisal("", text, window=16, stride=8, loaded=lm, max_tokens=10)
    assert len(first) <= 10
    assert [p for p, _ in first] == [p for p, _ in full[: len(first)]]
    assert [b for _, b in first] == pytest.approx([b for _, b in full[: len(first)]])


def test_html_escapes_text_and_shows_bits_on_hover():
    out = surprisal_html([("<script>", 3.0), ('"x" & y', 12.5), ("\n", None)], scale=(0.0, 10.0))
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "&quot;x&quot; &amp; y" in out
    assert 'title="12.50 bits' in out and 'title="not predicted"' in out
