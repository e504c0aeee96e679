"""Training a small GPT-2 from scratch, with no store: the probe's recipe, reused by validation.

A byte-level BPE, documents packed back to back into rows, AdamW with linear warmup and cosine
decay, bf16 autocast where it is native, a checkpoint that resumes to the same weights, and
`evaluate_bits` that scores held-out texts whole as scoring does. The probe job (`core.probe`) and
the validation arms (`core.validate`) are its two callers.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from core.devices import cpu_has_fast_bf16, resolve_device
from core.errors import InputError
from core.train_options import SIZES, Budget, TrainConfig

if TYPE_CHECKING:
    from core.jobs import CancelToken

EOS = "<|endoftext|>"
CALIBRATION_STEPS = 8  # under a --minutes budget, steps before the first estimate of the total


@dataclass
class TrainProgress:
    step: int
    total_steps: int | None
    tokens_seen: int
    seconds: float
    train_bits: float | None = None  # mean over the last log interval
    val_bits: float | None = None  # on the packed validation rows


@dataclass
class TrainStats:
    status: str  # done | cancelled
    steps: int
    total_steps: int
    tokens_seen: int
    seconds: float
    train_tokens: int  # tokens in one pass over the training texts
    train_bits_per_token: float | None
    val_bits_per_token: float | None
    device: str  # where it trained, resolved from config.device
    bf16_autocast: bool


def train_tokenizer(texts: list[str], vocab: int):
    """A byte-level BPE (GPT-2 style, never an unknown token) trained on TEXTS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS)


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids]


def pack_rows(seqs: list[list[int]], seq_len: int, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of shape [rows, seq_len]: documents back to back, each after an EOS.

    Row i predicts stream[i*T+1 : i*T+T+1] from stream[i*T : i*T+T], so every token is a target
    exactly once and long documents continue in the next row. The last row is padded with
    ignored targets (-100).
    """
    stream = torch.tensor([t for s in seqs for t in (eos, *s)], dtype=torch.long)
    n_rows = max(1, math.ceil((len(stream) - 1) / seq_len))
    padded = torch.full((n_rows * seq_len + 1,), eos, dtype=torch.long)
    padded[: len(stream)] = stream
    targets = padded[1:].clone()
    targets[max(len(stream) - 1, 0) :] = -100
    return padded[:-1].view(n_rows, seq_len), targets.view(n_rows, seq_len)


def build_model(config: TrainConfig, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    if config.size not in SIZES:
        raise InputError(f"unknown size '{config.size}' — use {', '.join(SIZES)}")
    n_layer, n_embd, n_head = SIZES[config.size]
    gpt2 = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.seq_len,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        # No dropout: a probe sees few epochs, and dropout costs ~5 % of a CPU step.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(gpt2)


def lr_at(step: int, total: int | None, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio of the peak at the last step."""
    warmup = config.warmup_steps if total is None else max(1, min(config.warmup_steps, total // 10))
    peak = config.peak_lr
    if step < warmup or total is None:
        return peak * min(1.0, (step + 1) / warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (
        config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def _batch_rows(step: int, batch_size: int, n_rows: int, seed: int, perms: dict) -> torch.Tensor:
    """Row indices of STEP: a seeded permutation per epoch, so resuming needs only the step."""
    idx = []
    for g in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(g, n_rows)
        if epoch not in perms:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perms.clear()  # only the current (and maybe next) epoch is ever needed
            perms[epoch] = torch.randperm(n_rows, generator=gen)
        idx.append(int(perms[epoch][pos]))
    return torch.tensor(idx)


def _use_bf16(device: str) -> bool:
    """bf16 autocast where it is native (CUDA, AVX512-bf16 CPUs), where it speeds up a step (see
    docs/benchmarks.md, "Figures behind the code's choices"); the loss stays fp32 (see _loss)."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and cpu_has_fast_bf16()


def _set_threads(device: str) -> None:
    """One thread per idle core, unless OMP_NUM_THREADS says otherwise.

    Training steps are many short parallel regions; on a busy machine extra threads wait at every
    barrier (docs/benchmarks.md, "Figures behind the code's choices").
    """
    if device != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    idle = (cores or 1) - os.getloadavg()[0]
    torch.set_num_threads(max(1, min(cores or 1, round(idle))))


def _optimizer(model, config: TrainConfig):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=config.peak_lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )


def _loss(model, inputs, targets, bf16: bool, device: str) -> torch.Tensor:
    """Mean next-token cross-entropy in nats; the log-softmax is taken in fp32 even under bf16."""
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=inputs, use_cache=False).logits
    return F.cross_entropy(
        logits.float().view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100
    )


@torch.no_grad()
def _packed_bits(model, rows: tuple[torch.Tensor, torch.Tensor], bf16: bool, device: str) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows[0]), 8):
        x, y = rows[0][i : i + 8].to(device), rows[1][i : i + 8].to(device)
        n = int((y != -100).sum())
        if n:
            total += float(_loss(model, x, y, bf16, device)) * n
            count += n
    model.train()
    return total / max(count, 1) / math.log(2)


def train_lm(
    tokenizer,
    train_texts: list[str],
    val_texts: list[str],
    config: TrainConfig,
    budget: Budget,
    seed: int = 0,
    cancel: CancelToken | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    checkpoint_dir: Path | None = None,
):
    """Train a GPT-2 from scratch on TRAIN_TEXTS; returns (model in fp32 on CPU, TrainStats).

    With CHECKPOINT_DIR, a checkpoint there is resumed, one is written at every evaluation and on
    cancel, so the same call continues where the last one stopped. A budget that names none
    trains DEFAULT_MINUTES.
    """
    budget = budget.resolved()
    device = resolve_device(config.device)
    _set_threads(device)
    bf16 = _use_bf16(device)
    torch.manual_seed(seed)
    model = build_model(config, tokenizer).to(device)
    model.train()
    eos = tokenizer.eos_token_id
    train_seqs = encode(tokenizer, train_texts)
    train_tokens = sum(len(s) for s in train_seqs)
    inputs, targets = pack_rows(train_seqs, config.seq_len, eos)
    del train_seqs
    val_rows = pack_rows(encode(tokenizer, val_texts[: config.eval_rows * 4]), config.seq_len, eos)
    val_rows = (val_rows[0][: config.eval_rows], val_rows[1][: config.eval_rows])
    n_rows = len(inputs)
    opt = _optimizer(model, config)
    total = budget.fixed_steps(n_rows, config.batch_size)
    step, tokens_seen, seconds = 0, 0, 0.0
    ckpt = _Checkpoint(checkpoint_dir / "state.pt", config, seed) if checkpoint_dir else None
    if ckpt is not None and ckpt.path.exists():
        step, total, tokens_seen, seconds = ckpt.load(model, opt)
    perms: dict = {}
    budget_s = budget.minutes * 60 if budget.minutes is not None else None
    eval_every = _eval_every(total, config) if total else None
    log_sum, log_n, last_train, last_val = 0.0, 0, None, None
    t0 = time.monotonic() - seconds

    def finished() -> bool:
        if budget_s is None:
            return step >= total
        return step > 0 and time.monotonic() - t0 >= budget_s

    done = finished()
    while not done and not (cancel is not None and cancel.cancelled):
        if budget_s is not None and step >= CALIBRATION_STEPS:
            # The cosine follows the steps expected to fit in the time left, re-estimated from
            # the speed so far, so a machine that gets busier still stops on time.
            total = max(step + 1, round(step * budget_s / (time.monotonic() - t0)))
            eval_every = eval_every or _eval_every(total, config)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, config)
        rows = _batch_rows(step, config.batch_size, n_rows, seed, perms)
        x, y = inputs[rows].to(device), targets[rows].to(device)
        loss = _loss(model, x, y, bf16, device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += int((y != -100).sum())
        log_sum += loss.item() / math.log(2)
        log_n += 1
        done = finished()
        if done:
            total = step
        progress = TrainProgress(step, total, tokens_seen, time.monotonic() - t0)
        if step % config.log_every == 0 or done:
            last_train = progress.train_bits = log_sum / log_n
            log_sum, log_n = 0.0, 0
        if done or (eval_every and step % eval_every == 0):
            last_val = progress.val_bits = _packed_bits(model, val_rows, bf16, device)
            if ckpt is not None and not done:
                ckpt.save(model, opt, step, total, tokens_seen, time.monotonic() - t0)
        if on_progress:
            on_progress(progress)
    seconds = time.monotonic() - t0
    status = "done" if done else "cancelled"
    if status == "cancelled" and ckpt is not None:
        ckpt.save(model, opt, step, total, tokens_seen, seconds)
    model = model.float().cpu().eval()
    return model, TrainStats(
        status=status,
        steps=step,
        total_steps=total if total is not None else step,
        tokens_seen=tokens_seen,
        seconds=seconds,
        train_tokens=train_tokens,
        train_bits_per_token=last_train,
        val_bits_per_token=last_val,
        device=device,
        bf16_autocast=bf16,
    )


def _eval_every(total: int, config: TrainConfig) -> int:
    """About eight validation points (and checkpoints) per run, never closer than log_every."""
    return max(config.log_every, total // 8)


@dataclass(frozen=True)
class _Checkpoint:
    """state.pt: weights, optimiser, schedule position and RNG of a run of CONFIG and SEED."""

    path: Path
    config: TrainConfig
    seed: int

    def save(self, model, opt, step: int, total: int | None, tokens_seen: int, seconds: float):
        """Write atomically: a job killed mid-write keeps the previous checkpoint."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                # The schedule is a pure function of (step, total, config), so this is its state.
                "schedule": {"step": step, "total_steps": total},
                "rng": torch.get_rng_state(),
                "config": asdict(self.config),
                "seed": self.seed,
                "tokens_seen": tokens_seen,
                "seconds": seconds,
            },
            tmp,
        )
        os.replace(tmp, self.path)

    def load(self, model, opt) -> tuple[int, int | None, int, float]:
        """Restore MODEL and OPT; (step, total steps, tokens seen, seconds) to continue from."""
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        same = _identity(state["config"]) == _identity(asdict(self.config))
        if not same or state["seed"] != self.seed:
            raise InputError(
                f"the checkpoint in {self.path.parent} was made with other settings "
                "— rerun with the same options, or delete it to start over"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        sched = state["schedule"]
        return sched["step"], sched["total_steps"], state["tokens_seen"], state["seconds"]


def _identity(config: dict) -> dict:
    """A checkpoint made on one device resumes on another."""
    return {k: v for k, v in config.items() if k != "device"}


def save_tokenizer(tokenizer, path: Path) -> None:
    """The fast tokenizer's one JSON file, which `load_tokenizer` reads back as the same."""
    tokenizer.backend_tokenizer.save(str(path))


def load_tokenizer(path: Path):
    """A tokenizer that `train_tokenizer` made and `save_tokenizer` wrote."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(path)), bos_token=EOS, eos_token=EOS
    )


def document_bits(model, tokenizer, texts: list[str]) -> list[tuple[float, int, int]]:
    """(bits, tokens, UTF-8 bytes) of each of TEXTS, scored whole as scoring does: what
    per-group effects and bootstrap intervals over documents are computed from."""
    from core.engine import EngineSettings, Scorer

    scores = Scorer(model, tokenizer, EngineSettings(dtype="float32")).score_texts(texts)
    return [
        (float(s.bits_total), int(s.n_tokens), len(t.encode("utf-8")))
        for s, t in zip(scores, texts, strict=True)
    ]


def evaluate_bits(model, tokenizer, texts: list[str]) -> tuple[float, float]:
    """(bits per token, bits per UTF-8 byte) over TEXTS, each scored whole as scoring does."""
    return pooled_bits(document_bits(model, tokenizer, texts))


def pooled_bits(docs: list[tuple[float, int, int]]) -> tuple[float, float]:
    """(bits per token, bits per byte) of documents given as (bits, tokens, bytes)."""
    bits = sum(d[0] for d in docs)
    return bits / max(sum(d[1] for d in docs), 1), bits / max(sum(d[2] for d in docs), 1)


def unigram_bits(tokenizer, train_texts: list[str], val_texts: list[str]) -> float:
    """Bits per token of VAL under the training fraction's token frequencies (add-one smoothed).

    The model-free baseline a probe must beat: what knowing only how common each token is buys.
    """
    counts = torch.ones(len(tokenizer), dtype=torch.float64)
    for ids in encode(tokenizer, train_texts):
        counts += torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=len(counts))
    logp = counts.log2() - counts.sum().log2()
    val = [t for ids in encode(tokenizer, val_texts) for t in ids]
    if not val:
        return float("nan")
    return float(-logp[torch.tensor(val)].mean())
