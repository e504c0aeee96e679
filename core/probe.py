"""The data probe: a small GPT-2 trained from scratch on a fraction of the dataset it will score.

Two layers. `train_tokenizer`, `train_lm` and `evaluate_bits` know nothing of the store, so other
features (validation arms) can retrain small models on any texts. `run_probe` is the job: it draws
the split, trains, writes a Hugging Face directory with an `infoprune.json` card, and reports
progress and the loss curve to the store in short transactions. A cancelled or crashed job leaves
a checkpoint in OUT/checkpoint/ and running the same command again continues from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import torch
import torch.nn.functional as F

from core import __version__, jobs
from core.datasets import DatasetInfo, get_dataset, texts_by_id
from core.errors import InputError
from core.jobs import CancelToken
from core.models import weights_hash
from core.store import Store

__all__ = [
    "Budget",
    "ProbeConfig",
    "ProbeOptions",
    "TrainProgress",
    "TrainStats",
    "cancel_probe",
    "evaluate_bits",
    "list_probes",
    "probe_curve",
    "run_probe",
    "split_ids",
    "start_probe_job",
    "train_lm",
    "train_tokenizer",
    "unigram_bits",
    "weights_hash",
]

EOS = "<|endoftext|>"
SIZES = {  # (layers, width, heads)
    "tiny": (2, 128, 2),
    "small": (4, 256, 4),
    "base": (6, 384, 6),
}
DEFAULT_LR = {"tiny": 2e-3, "small": 1.5e-3, "base": 1e-3}
MIN_SAMPLES = 10
VAL_SHARE = 0.05  # of the dataset, capped at MAX_VAL samples: enough for a stable estimate
MAX_VAL = 200
INLINE_IDS = 50  # more ids than this go to train_ids.txt / val_ids.txt beside the card
MAX_FP32_BYTES = 16_000_000  # larger weights are saved as bf16 so a probe stays under ~20 MB
CALIBRATION_STEPS = 8  # under a --minutes budget, steps before the first estimate of the total
COMMIT_SECONDS = 3.0  # how often progress and the curve reach the store


@dataclass(frozen=True)
class ProbeConfig:
    """The model and its optimisation: what a checkpoint must match to resume (bar the device)."""

    size: str = "small"
    vocab: int = 8192
    seq_len: int = 256
    batch_size: int = 16  # rows of seq_len tokens per optimiser step
    lr: float | None = None  # None: the size's default
    warmup_steps: int = 50  # at most a tenth of the run
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 5
    eval_rows: int = 32  # packed validation rows for the curve; the card evaluates all of it
    device: str = "auto"

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.size]


@dataclass(frozen=True)
class Budget:
    """How long to train: exactly one of steps, epochs (over the packed rows) or minutes."""

    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None

    def fixed_steps(self, n_rows: int, batch_size: int) -> int | None:
        """Total steps, or None while a time budget still has to be measured."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * n_rows / batch_size))
        return None


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


# ---- store-free building blocks ------------------------------------------------------------


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


def split_ids(ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val): disjoint, a function of the ids and seed only (not of row order).

    Ids are ordered by a seeded hash; validation takes the first slice, so probes trained with
    different fractions but the same seed share one validation set.
    """
    n = len(ids)
    if n < MIN_SAMPLES:
        raise InputError(
            f"the dataset has {n} samples; a probe needs at least {MIN_SAMPLES} — ingest more text"
        )
    order = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}\x00{i}".encode()).digest())
    n_val = min(max(1, round(n * VAL_SHARE)), MAX_VAL)
    n_train = min(round(fraction * n), n - n_val)
    if n_train < 1:
        raise InputError(
            f"--fraction {fraction} of {n} samples selects no training sample — raise --fraction"
        )
    return order[n_val : n_val + n_train], order[:n_val]


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


def build_model(config: ProbeConfig, tokenizer):
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


def lr_at(step: int, total: int | None, config: ProbeConfig) -> float:
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


def _resolve_device(name: str) -> str:
    from core.engine import _resolve_device as resolve

    return resolve(name)


def _use_bf16(device: str) -> bool:
    """bf16 autocast where it is native (CUDA, AVX512-bf16 CPUs): 1.2-1.4x per step measured for
    small and base here, on par for tiny; the loss stays fp32 (see _loss)."""
    from core.engine import _cpu_has_fast_bf16

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and _cpu_has_fast_bf16()


def _set_threads(device: str) -> None:
    """One thread per idle core, unless OMP_NUM_THREADS says otherwise.

    Training steps are many short parallel regions; on a busy machine extra threads wait at every
    barrier (measured: 2 threads under a load of 6 on 2 cores took 2.2x as long per step as 1).
    """
    if device != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    idle = (cores or 1) - os.getloadavg()[0]
    torch.set_num_threads(max(1, min(cores or 1, round(idle))))


def _optimizer(model, config: ProbeConfig):
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
    config: ProbeConfig,
    budget: Budget,
    seed: int = 0,
    cancel: CancelToken | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    checkpoint_dir: Path | None = None,
):
    """Train a GPT-2 from scratch on TRAIN_TEXTS; returns (model in fp32 on CPU, TrainStats).

    With CHECKPOINT_DIR, a checkpoint there is resumed, one is written at every evaluation and on
    cancel, so the same call continues where the last one stopped.
    """
    cancel = cancel or CancelToken()
    device = _resolve_device(config.device)
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
    state_path = checkpoint_dir / "state.pt" if checkpoint_dir else None
    if state_path is not None and state_path.exists():
        step, total, tokens_seen, seconds = _load_checkpoint(state_path, model, opt, config, seed)
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
    while not done and not cancel.cancelled:
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
            if state_path is not None and not done:
                elapsed = time.monotonic() - t0
                _save_checkpoint(
                    state_path, model, opt, config, seed, step, total, tokens_seen, elapsed
                )
        if on_progress:
            on_progress(progress)
    seconds = time.monotonic() - t0
    status = "done" if done else "cancelled"
    if status == "cancelled" and state_path is not None:
        _save_checkpoint(state_path, model, opt, config, seed, step, total, tokens_seen, seconds)
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
    )


def _eval_every(total: int, config: ProbeConfig) -> int:
    """About eight validation points (and checkpoints) per run, never closer than log_every."""
    return max(config.log_every, total // 8)


def _save_checkpoint(path: Path, model, opt, config, seed, step, total, tokens_seen, seconds):
    """Write atomically: a job killed mid-write keeps the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            # The schedule is a pure function of (step, total, config), so this is its state.
            "schedule": {"step": step, "total_steps": total},
            "rng": torch.get_rng_state(),
            "config": asdict(config),
            "seed": seed,
            "tokens_seen": tokens_seen,
            "seconds": seconds,
        },
        tmp,
    )
    os.replace(tmp, path)


def _identity(config: dict) -> dict:
    """A checkpoint made on one device resumes on another."""
    return {k: v for k, v in config.items() if k != "device"}


def _load_checkpoint(path: Path, model, opt, config, seed) -> tuple[int, int | None, int, float]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if _identity(state["config"]) != _identity(asdict(config)) or state["seed"] != seed:
        raise InputError(
            f"the checkpoint in {path.parent} was made with other settings "
            "— rerun with the same options, or delete it to start over"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    sched = state["schedule"]
    return sched["step"], sched["total_steps"], state["tokens_seen"], state["seconds"]


def evaluate_bits(model, tokenizer, texts: list[str]) -> tuple[float, float]:
    """(bits per token, bits per UTF-8 byte) over TEXTS, each scored whole as scoring does."""
    from core.engine import EngineSettings, Scorer

    scores = Scorer(model, tokenizer, EngineSettings(dtype="float32")).score_texts(texts)
    bits = sum(s.bits_total for s in scores)
    tokens = sum(s.n_tokens for s in scores)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return bits / max(tokens, 1), bits / max(n_bytes, 1)


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


# ---- the job: dataset in the store -> probe directory + card + curve -------------------------

DEFAULT_MINUTES = 10.0


@dataclass
class ProbeOptions:
    """`infoprune train-probe` options; no budget given means DEFAULT_MINUTES of training."""

    fraction: float = 0.2
    size: str = "small"
    vocab: int = 8192
    seq_len: int = 256
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    seed: int = 0
    batch_size: int = 16
    lr: float | None = None
    device: str = "auto"

    def budget(self) -> Budget:
        if self.steps is None and self.epochs is None and self.minutes is None:
            return Budget(minutes=DEFAULT_MINUTES)
        return Budget(self.steps, self.epochs, self.minutes)

    def config(self) -> ProbeConfig:
        return ProbeConfig(
            size=self.size,
            vocab=self.vocab,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            lr=self.lr,
            device=self.device,
        )

    def key(self, fingerprint: str) -> str:
        """What a checkpoint must match to be resumed (the device may differ)."""
        ident = {k: v for k, v in asdict(self).items() if k != "device"}
        ident["budget"] = asdict(self.budget())
        return hashlib.sha256(
            json.dumps([fingerprint, ident], sort_keys=True).encode()
        ).hexdigest()[:16]

    def argv(self) -> list[str]:
        """The same options as `infoprune train-probe` flags, for a background job."""
        out = ["--fraction", str(self.fraction), "--size", self.size, "--vocab", str(self.vocab)]
        out += ["--seq-len", str(self.seq_len), "--seed", str(self.seed)]
        out += ["--batch-size", str(self.batch_size), "--device", self.device]
        for flag, val in (
            ("--steps", self.steps),
            ("--epochs", self.epochs),
            ("--minutes", self.minutes),
            ("--lr", self.lr),
        ):
            if val is not None:
                out += [flag, str(val)]
        return out


@dataclass
class ProbeOutcome:
    probe_id: str
    status: str  # done | cancelled
    out_dir: Path
    card: dict = field(default_factory=dict)
    step: int = 0
    total_steps: int = 0


def validate_options(opts: ProbeOptions) -> None:
    if not 0 < opts.fraction <= 1:
        raise InputError(f"--fraction {opts.fraction} must be in (0, 1] — e.g. --fraction 0.2")
    if opts.size not in SIZES:
        raise InputError(f"unknown --size '{opts.size}' — use {', '.join(SIZES)}")
    if not 300 <= opts.vocab <= 65536:
        raise InputError(f"--vocab {opts.vocab} must be between 300 and 65536 — e.g. --vocab 8192")
    if opts.seq_len < 256:
        raise InputError(f"--seq-len {opts.seq_len} is too short — use 256 or more")
    if sum(v is not None for v in (opts.steps, opts.epochs, opts.minutes)) > 1:
        raise InputError("give one of --steps, --epochs or --minutes, not several")
    for name in ("steps", "epochs", "minutes", "batch_size", "lr"):
        val = getattr(opts, name)
        if val is not None and val <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive")


def _check_out_dir(out: Path, key: str) -> dict | None:
    """None for a fresh directory, the resume record for a matching checkpoint, else an error."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file — pass a directory path")
    if not out.exists() or all(
        f == out / "checkpoint" / "lock" for f in out.rglob("*") if f.is_file()
    ):
        return None
    record = out / "checkpoint" / "resume.json"
    if record.exists():
        resume = json.loads(record.read_text())
        if resume.get("key") == key:
            return resume
        raise InputError(
            f"{out} holds an unfinished probe trained with other options — rerun its command "
            "to resume it, or pass a new --out"
        )
    raise InputError(f"output directory {out} is not empty — pass a new --out or empty it")


def _load_ids(store: Store, dataset: str) -> list[str]:
    rows = store.query(
        "SELECT sample_id FROM samples WHERE dataset = ? ORDER BY row_idx", [dataset]
    )
    return [r[0] for r in rows]


def _prepare(store: Store, dataset: str, out_dir, opts: ProbeOptions):
    """Every check a user can fail, before any row is written or any work is done."""
    validate_options(opts)
    info = get_dataset(store, dataset)
    out = Path(out_dir).expanduser()
    key = opts.key(info.fingerprint)
    resume = _check_out_dir(out, key)
    train_ids, val_ids = split_ids(_load_ids(store, dataset), opts.fraction, opts.seed)
    return info, out, key, resume, train_ids, val_ids


def run_probe(
    store: Store,
    dataset: str,
    out_dir: str | Path,
    opts: ProbeOptions,
    probe_id: str | None = None,
    cancel: CancelToken | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> ProbeOutcome:
    """Train (or resume) the probe of DATASET into OUT_DIR, reporting to the store as it goes."""
    info, out, key, resume, train_ids, val_ids = _prepare(store, dataset, out_dir, opts)
    probe_id = resume["probe_id"] if resume else probe_id or "probe-" + uuid.uuid4().hex[:8]
    with _lock_out_dir(out):
        _claim(store, probe_id, info, out, opts)
        try:
            return _train_and_write(
                store,
                probe_id,
                info,
                out,
                key,
                resume,
                opts,
                train_ids,
                val_ids,
                cancel,
                on_progress,
            )
        except BaseException as exc:
            error = str(exc).splitlines()[0] if str(exc) else repr(exc)
            _finish(store, probe_id, "failed", error=error)
            raise


@contextlib.contextmanager
def _lock_out_dir(out: Path) -> Iterator[None]:
    """One trainer per directory: a second command on the same --out fails instead of racing.

    The lock is on a file (not in the store) so that it also holds between different stores.
    """
    import fcntl

    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    with open(out / "checkpoint" / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"{out} is being trained by another process — wait for it, or cancel it first"
            ) from None
        yield


def _train_and_write(
    store,
    probe_id,
    info: DatasetInfo,
    out: Path,
    key,
    resume,
    opts,
    train_ids,
    val_ids,
    cancel,
    on_progress,
) -> ProbeOutcome:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    ckpt = out / "checkpoint"
    train_texts = texts_by_id(store, info.name, train_ids, info.fingerprint)
    val_texts = texts_by_id(store, info.name, val_ids, info.fingerprint)
    t_tok = time.monotonic()
    if resume:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_file(str(ckpt / "tokenizer.json")),
            bos_token=EOS,
            eos_token=EOS,
        )
        tokenizer_seconds = resume["tokenizer_seconds"]
    else:
        tokenizer = train_tokenizer(train_texts, opts.vocab)
        tokenizer_seconds = time.monotonic() - t_tok
        ckpt.mkdir(parents=True, exist_ok=True)
        tokenizer.backend_tokenizer.save(str(ckpt / "tokenizer.json"))
        record = {
            "key": key,
            "probe_id": probe_id,
            "dataset": info.name,
            "fingerprint": info.fingerprint,
            "tokenizer_seconds": tokenizer_seconds,
        }
        (ckpt / "resume.json").write_text(json.dumps(record, indent=1))

    reporter = _Reporter(store, probe_id, on_progress)
    model, stats = train_lm(
        tokenizer,
        train_texts,
        val_texts,
        opts.config(),
        opts.budget(),
        seed=opts.seed,
        cancel=cancel,
        on_progress=reporter,
        checkpoint_dir=ckpt,
    )
    reporter.flush()
    if stats.status == "cancelled":
        _finish(store, probe_id, "cancelled")
        return ProbeOutcome(
            probe_id, "cancelled", out, step=stats.steps, total_steps=stats.total_steps
        )

    card = _write_probe(
        out,
        model,
        tokenizer,
        info,
        opts,
        stats,
        train_ids,
        val_ids,
        train_texts,
        val_texts,
        tokenizer_seconds,
    )
    _record_samples(store, card["model_hash"], info.fingerprint, train_ids, val_ids)
    shutil.rmtree(ckpt)
    _finish(store, probe_id, "done", val_bits=card["val_bits_per_token"])
    return ProbeOutcome(probe_id, "done", out, card, stats.steps, stats.total_steps)


def _write_probe(
    out,
    model,
    tokenizer,
    info,
    opts,
    stats,
    train_ids,
    val_ids,
    train_texts,
    val_texts,
    tokenizer_seconds,
) -> dict:
    """Save weights + tokenizer + card; the card's numbers are measured on the saved weights."""
    n_params = sum(p.numel() for p in model.parameters())
    # bf16 halves the file; evaluating the rounded weights keeps the card honest about it.
    dtype = torch.float32 if 4 * n_params <= MAX_FP32_BYTES else torch.bfloat16
    model.to(dtype).save_pretrained(out)
    model.float()
    tokenizer.save_pretrained(out)
    val_bpt, val_bpb = evaluate_bits(model, tokenizer, val_texts)
    ids = {}
    for role, role_ids in (("train", train_ids), ("val", val_ids)):
        if len(role_ids) > INLINE_IDS:
            (out / f"{role}_ids.txt").write_text("\n".join(role_ids) + "\n", encoding="utf-8")
            ids[role] = f"{role}_ids.txt"
        else:
            ids[role] = list(role_ids)
    cfg = model.config
    card = {
        "infoprune_version": __version__,
        "kind": "data-probe",
        "dataset": info.name,
        "fingerprint": info.fingerprint,
        "fraction": opts.fraction,
        "seed": opts.seed,
        "size": opts.size,
        "config": {
            "architecture": "GPT2LMHeadModel",
            "n_layer": cfg.n_layer,
            "n_embd": cfg.n_embd,
            "n_head": cfg.n_head,
            "n_positions": cfg.n_positions,
            "vocab_size": cfg.vocab_size,
            "n_params": n_params,
            "weights_dtype": str(dtype).removeprefix("torch."),
        },
        "vocab": opts.vocab,
        "seq_len": opts.seq_len,
        "batch_size": opts.batch_size,
        "lr": opts.config().peak_lr,
        "budget": {k: v for k, v in asdict(opts.budget()).items() if v is not None},
        "n_train_samples": len(train_ids),
        "n_val_samples": len(val_ids),
        "train_ids": ids["train"],
        "val_ids": ids["val"],
        "steps": stats.steps,
        "tokens_seen": stats.tokens_seen,
        "train_tokens": stats.train_tokens,
        "epochs": round(stats.tokens_seen / max(stats.train_tokens, 1), 3),
        "training_seconds": round(stats.seconds, 1),
        "tokenizer_seconds": round(tokenizer_seconds, 1),
        "device": _resolve_device(opts.device),
        "bf16_autocast": _use_bf16(_resolve_device(opts.device)),
        "train_bits_per_token": stats.train_bits_per_token,
        "val_bits_per_token": val_bpt,
        "val_bits_per_byte": val_bpb,
        "val_unigram_bits_per_token": unigram_bits(tokenizer, train_texts, val_texts),
        "model_hash": weights_hash(out),
    }
    (out / "infoprune.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return card


def _record_samples(store: Store, model_hash: str, fingerprint: str, train_ids, val_ids) -> None:
    """Which samples trained (and validated) these weights, for Explore to flag."""
    ids = [*train_ids, *val_ids]
    roles = ["train"] * len(train_ids) + ["val"] * len(val_ids)
    tbl = pa.table(
        {
            "model_hash": [model_hash] * len(ids),
            "fingerprint": [fingerprint] * len(ids),
            "sample_id": ids,
            "role": roles,
        }
    )
    with store.transaction() as con:
        con.execute(
            "DELETE FROM probe_samples WHERE model_hash = ? AND fingerprint = ?",
            [model_hash, fingerprint],
        )
        con.register("_probe_ids", tbl)
        con.execute("INSERT INTO probe_samples SELECT * FROM _probe_ids")
        con.unregister("_probe_ids")


class _Reporter:
    """Buffers the curve and commits it with the progress every few seconds (short transactions)."""

    def __init__(self, store: Store, probe_id: str, forward):
        self.store, self.probe_id, self.forward = store, probe_id, forward
        self.rows: list[tuple] = []
        self.last: TrainProgress | None = None
        self.first_step: int | None = None
        self.flushed_at = time.monotonic()

    def __call__(self, p: TrainProgress) -> None:
        if self.last is None:
            self.first_step = p.step
        for split, bits in (("train", p.train_bits), ("val", p.val_bits)):
            if bits is not None:
                self.rows.append((self.probe_id, p.step, split, bits, p.tokens_seen, p.seconds))
        self.last = p
        if p.val_bits is not None or time.monotonic() - self.flushed_at > COMMIT_SECONDS:
            self.flush()
        if self.forward:
            self.forward(p)

    def flush(self) -> None:
        if self.last is None:
            return
        p = self.last
        with self.store.transaction() as con:
            if self.first_step is not None:
                # Points logged after the checkpoint we resumed from are about to be redone.
                con.execute(
                    "DELETE FROM probe_metrics WHERE probe_id = ? AND step >= ?",
                    [self.probe_id, self.first_step],
                )
            if self.rows:
                con.executemany("INSERT INTO probe_metrics VALUES (?, ?, ?, ?, ?, ?)", self.rows)
            con.execute(
                "UPDATE probes SET step = ?, total_steps = ?, tokens_seen = ?, seconds = ?, "
                "updated_at = now() WHERE probe_id = ?",
                [p.step, p.total_steps, p.tokens_seen, p.seconds, self.probe_id],
            )
        self.rows = []
        self.first_step = None
        self.flushed_at = time.monotonic()


def _claim(store: Store, probe_id: str, info: DatasetInfo, out: Path, opts: ProbeOptions) -> None:
    """Create the probes row or take over an existing one (queued, cancelled, failed)."""
    with store.transaction() as con:
        if not jobs.claim(con, jobs.PROBES, probe_id):
            _insert_row(con, probe_id, info, out, opts, "running", jobs.owner())


def _insert_row(con, probe_id, info, out: Path, opts, status, owner) -> None:
    con.execute(
        "INSERT INTO probes (probe_id, dataset, fingerprint, out_dir, settings, status, step, "
        "tokens_seen, seconds, pid, pid_start, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?, now(), now())",
        [
            probe_id,
            info.name,
            info.fingerprint,
            str(out.resolve()),
            json.dumps(asdict(opts)),
            status,
            owner.pid if owner else None,
            owner.start if owner else None,
        ],
    )


def _finish(
    store: Store,
    probe_id: str,
    status: str,
    error: str | None = None,
    val_bits: float | None = None,
) -> None:
    also = {} if val_bits is None else {"val_bits_per_token": val_bits}
    with store.transaction() as con:
        jobs.finish(con, jobs.PROBES, probe_id, status, error, **also)


# ---- what the UI calls ------------------------------------------------------------------------


def start_probe_job(store: Store, dataset: str, out_dir: str | Path, **options) -> str:
    """Check the inputs, queue a probes row and start `infoprune train-probe` in the background."""
    opts = ProbeOptions(**options)
    info, out, _key, resume, _train, _val = _prepare(store, dataset, out_dir, opts)
    probe_id = resume["probe_id"] if resume else "probe-" + uuid.uuid4().hex[:8]
    with store.transaction() as con:
        row = jobs.job_row(con, jobs.PROBES, probe_id)
        jobs.refuse_if_taken(jobs.PROBES, probe_id, row)
        if row:
            con.execute(
                "UPDATE probes SET status = 'queued', error = NULL, updated_at = now() "
                "WHERE probe_id = ?",
                [probe_id],
            )
        else:
            _insert_row(con, probe_id, info, out, opts, "queued", None)
    argv = ["train-probe", "--dataset", dataset, "--out", str(out.resolve()), *opts.argv()]
    job_id = jobs.start_job(store, "probe", [*argv, "--probe-id", probe_id], ref=probe_id)
    with store.transaction() as con:
        # The job's pid until the process claims the row itself, so a queued probe can be cancelled.
        con.execute(
            "UPDATE probes SET pid = j.pid, pid_start = j.pid_start FROM jobs j "
            "WHERE j.job_id = ? AND probes.probe_id = ? AND probes.status = 'queued'",
            [job_id, probe_id],
        )
    return probe_id


def list_probes(store: Store):
    """Probes newest first; a queued/running probe whose process is gone shows as 'stopped'."""
    df = store.query_df(
        "SELECT probe_id, dataset, out_dir, status, step, total_steps, tokens_seen, "
        "val_bits_per_token, seconds, error, settings, pid, pid_start, created_at, finished_at "
        "FROM probes ORDER BY created_at DESC"
    )
    return jobs.with_live_status(df, jobs.PROBES)


def probe_curve(store: Store, probe_id: str):
    """The loss curve: (step, split, bits_per_token, tokens_seen, seconds), split train|val."""
    jobs.known_row(store, jobs.PROBES, probe_id)
    return store.query_df(
        "SELECT step, split, bits_per_token, tokens_seen, seconds FROM probe_metrics "
        "WHERE probe_id = ? ORDER BY split, step",
        [probe_id],
    )


def cancel_probe(store: Store, probe_id: str) -> bool:
    """Ask the training process to checkpoint and stop; False if it is not running."""
    return jobs.cancel(store, jobs.PROBES, probe_id)
