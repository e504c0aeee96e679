"""What training is asked to do, declared once: the model, how long, and the probe job's options.

The `train-probe` flags are generated from these fields (`core.options`), and `core.training`
and `core.validate` read the same `TrainConfig` and `Budget`. Kept apart from core/training.py so
that building the CLI's parser imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from core.devices import DEVICES
from core.errors import InputError
from core.options import nested, option, values

SIZES = {  # (layers, width, heads), smallest first
    "tiny": (2, 128, 2),
    "small": (4, 256, 4),
    "base": (6, 384, 6),
}
DEFAULT_LR = {"tiny": 2e-3, "small": 1.5e-3, "base": 1e-3}
DEFAULT_MINUTES = 10.0  # a budget that names none


@dataclass(frozen=True)
class TrainConfig:
    """The model and its optimisation: what a checkpoint must match to resume (bar the device)."""

    size: str = option("small", choices=SIZES, help="model size (layers x width)")
    vocab: int = option(8192, help="BPE vocabulary size")
    seq_len: int = option(256, help="tokens per row = model context")
    batch_size: int = option(16, help="rows of seq_len tokens per optimiser step")
    lr: float | None = option(None, help="peak learning rate (default by size)")
    warmup_steps: int = 50  # at most a tenth of the run
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 5
    eval_rows: int = 32  # packed validation rows for the curve; the card evaluates all of it
    device: str = option("auto", help="|".join(DEVICES))

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.size]


@dataclass(frozen=True)
class Budget:
    """How long to train: at most one of steps, epochs (over the packed rows) or minutes."""

    steps: int | None = option(None, metavar="N", group="budget")
    epochs: float | None = option(None, metavar="E", group="budget")
    minutes: float | None = option(
        None, metavar="M", group="budget", help=f"default {DEFAULT_MINUTES:g}"
    )

    def resolved(self) -> Budget:
        """This budget, or DEFAULT_MINUTES of training when it names none."""
        if self.steps is None and self.epochs is None and self.minutes is None:
            return Budget(minutes=DEFAULT_MINUTES)
        return self

    def fixed_steps(self, n_rows: int, batch_size: int) -> int | None:
        """Total steps, or None while a time budget still has to be measured."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * n_rows / batch_size))
        return None


@dataclass(frozen=True)
class ProbeOptions:
    """`infoprune train-probe` options: which samples, which model, how long."""

    fraction: float = option(0.2, help="share of samples to train on")
    seed: int = option(0, help="seed of the split and of the initial weights")
    config: TrainConfig = nested(TrainConfig)
    budget: Budget = nested(Budget)

    def key(self, fingerprint: str) -> str:
        """What a checkpoint must match to be resumed (the device may differ)."""
        ident = {k: v for k, v in values(self).items() if k != "device"}
        ident["budget"] = asdict(self.budget.resolved())
        return hashlib.sha256(
            json.dumps([fingerprint, ident], sort_keys=True).encode()
        ).hexdigest()[:16]

    def check(self) -> None:
        """Every option a user can get wrong, said as the flag to fix."""
        if not 0 < self.fraction <= 1:
            raise InputError(f"--fraction {self.fraction} must be in (0, 1] — e.g. --fraction 0.2")
        c = self.config
        if c.size not in SIZES:
            raise InputError(f"unknown --size '{c.size}' — use {', '.join(SIZES)}")
        if not 300 <= c.vocab <= 65536:
            raise InputError(f"--vocab {c.vocab} must be between 300 and 65536 — e.g. --vocab 8192")
        if c.seq_len < 256:
            raise InputError(f"--seq-len {c.seq_len} is too short — use 256 or more")
        b = self.budget
        if sum(v is not None for v in (b.steps, b.epochs, b.minutes)) > 1:
            raise InputError("give one of --steps, --epochs or --minutes, not several")
        given = values(self)
        for name in ("steps", "epochs", "minutes", "batch_size", "lr"):
            if given[name] is not None and given[name] <= 0:
                raise InputError(f"--{name.replace('_', '-')} must be positive")
