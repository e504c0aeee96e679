"""Per-token surprisal of one sample, computed on demand with the run's model and windows.

The numbers are the ones the run stored, token by token: the same token sequence
(`engine.sequence_for`), the same windows (`windows.plan_windows`), a plain float32 forward. So
the bits of all tokens add up to the sample's `bits_total` (up to the run's dtype).
"""

from __future__ import annotations

import html
import math

from core.engine import LN2, sequence_for
from core.models import LoadedModel, load_model
from core.windows import plan_windows


def token_surprisal(
    model_dir_or_id: str,
    text: str,
    window: int,
    stride: int,
    loaded: LoadedModel | None = None,
    max_tokens: int | None = None,
) -> list[tuple[str, float | None]]:
    """(piece of TEXT, bits) per token, the pieces adding up to TEXT (or its first MAX_TOKENS).

    A token that ends inside a character another token completes shares that character's piece:
    its bits are added to it, so no piece is empty. Bits are None for a first token the model
    cannot predict (a tokenizer with neither BOS nor EOS). Pass LOADED to reuse a loaded model.
    """
    import torch

    lm = loaded or load_model(model_dir_or_id)
    seq, _ = sequence_for(lm.tokenizer, text)
    ends = _token_ends(lm.tokenizer, text)
    offset = len(seq) - len(ends)  # 1 with a prefix token, else 0
    whole = max_tokens is None or max_tokens >= len(ends)
    if not whole:
        seq, ends = seq[: max_tokens + offset], ends[:max_tokens]
    bits: list[float | None] = [None] * len(seq)
    device = next(lm.model.parameters()).device
    with torch.inference_mode():
        for start, end, first in plan_windows(len(seq), window, stride):
            ids = torch.tensor([seq[start:end]], device=device)
            logits = lm.model(ids).logits[0, first - start - 1 : -1].float()
            targets = ids[0, first - start :, None]
            logp = logits.gather(1, targets)[:, 0] - torch.logsumexp(logits, dim=-1)
            bits[first:end] = (-logp / LN2).tolist()
    return _pieces(text, ends, bits[offset:], whole)


def _token_ends(tokenizer, text: str) -> list[int]:
    """The character offset where each token of TEXT ends."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [end for _, end in enc["offset_mapping"]]


def _pieces(
    text: str, ends: list[int], bits: list[float | None], whole: bool
) -> list[tuple[str, float | None]]:
    out: list[list] = []
    done = 0
    for end, b in zip(ends, bits, strict=True):
        piece = text[done : max(end, done)]
        done = max(end, done)
        if piece or not out:
            out.append([piece, b])
        elif b is not None:
            out[-1][1] = (out[-1][1] or 0.0) + b
    if whole and out and done < len(text):
        out[-1][0] += text[done:]
    return [(p, b) for p, b in out]


def surprisal_html(
    pieces: list[tuple[str, float | None]], scale: tuple[float, float] | None = None
) -> str:
    """The pieces as HTML spans shaded by bits, white at SCALE[0] to dark red at SCALE[1].

    The default scale is this sample's 5th to 95th percentile, so differences show whatever the
    model's overall level. Each span's title shows its bits on hover; all text is escaped.
    """
    values = sorted(b for _, b in pieces if b is not None)
    if scale is None:
        scale = (
            (values[int(0.05 * (len(values) - 1))], values[int(0.95 * (len(values) - 1))])
            if values
            else (0.0, 1.0)
        )
    low, high = scale
    spans = []
    for piece, b in pieces:
        if b is None:
            spans.append(f'<span title="not predicted">{html.escape(piece)}</span>')
            continue
        strength = min(max((b - low) / ((high - low) or 1.0), 0.0), 1.0)
        r, g, bl = 255, round(255 - 200 * strength), round(255 - 230 * strength)
        colour = "#fff" if strength > 0.75 else "#000"
        title = html.escape(f"{b:.2f} bits · {piece!r}", quote=True)
        spans.append(
            f'<span style="background:rgb({r},{g},{bl});color:{colour}" '
            f'title="{title}">{html.escape(piece)}</span>'
        )
    return (
        '<div style="white-space:pre-wrap;font-family:monospace;line-height:1.6">'
        + "".join(spans)
        + "</div>"
    )


def total_bits(pieces: list[tuple[str, float | None]]) -> float:
    return math.fsum(b for _, b in pieces if b is not None)
