"""What a scoring run is asked to do, declared once: the `infoprune score` flags come from here.

Kept apart from core/scoring.py so that building the CLI's parser imports no pyarrow or pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.devices import DEVICES, DTYPE_CHOICES
from core.errors import InputError
from core.options import option, to_argv


@dataclass
class ScoreOptions:
    """How to score; each field is also its `infoprune score` flag (core/options.py)."""

    model: str = option(
        metavar="MODEL",
        help="local HF model directory, hub id, or 'none' for model-free measures only",
    )
    device: str = option("auto", help=f"{'|'.join(DEVICES)} (default %(default)s)")
    dtype: str = option(
        "auto",
        choices=DTYPE_CHOICES,
        help="precision (default %(default)s: bfloat16 where the hardware is fast at it)",
    )
    window: int | None = option(None, metavar="W", help="positions per window (model max)")
    stride: int | None = option(None, metavar="S", help="window step (default W/2)")
    max_batch_tokens: int = option(
        8192, metavar="N", help="tokens per forward pass (default %(default)s)"
    )
    limit: int | None = option(None, metavar="N", help="score only the first N samples")
    trust_remote_code: bool = option(False, help="run the model repository's own Python code")
    allow_pickle: bool = option(False, help="allow .bin (pickle) weights")
    compile: bool = option(False, help="torch.compile the fast path")

    @property
    def model_free(self) -> bool:
        """`--model none`: the measures that need no model, in seconds."""
        return self.model.strip().lower() == "none"

    def argv(self) -> list[str]:
        """The same options as `infoprune score` flags, for starting a background job."""
        return to_argv(self)


def validate_options(opts: ScoreOptions) -> None:
    for name in ("window", "stride", "limit", "max_batch_tokens"):
        val = getattr(opts, name)
        if val is not None and val < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a positive number")
    if opts.dtype not in DTYPE_CHOICES:
        raise InputError(
            f"unknown dtype '{opts.dtype}' — use {', '.join(DTYPE_CHOICES[:-1])} "
            f"or {DTYPE_CHOICES[-1]}"
        )
    given = [name for name in ("window", "stride") if getattr(opts, name) is not None]
    if opts.model_free and given:  # said, rather than ignored: the run would not use them
        flags = " and ".join(f"--{name}" for name in given)
        raise InputError(
            f"{flags} apply to a model only — drop {'them' if len(given) > 1 else 'it'} with "
            "--model none",
            ui="Window and stride apply to a model only — set them to 0, or choose a model.",
        )
