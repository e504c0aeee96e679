"""The data probe job: a small GPT-2 trained on a fraction of the dataset it will score.

`run_probe` draws the split, trains with `core.training`, writes a Hugging Face directory with an
`infoprune.json` card, and reports progress and the loss curve to the store in short
transactions. A cancelled or crashed job leaves a checkpoint in OUT/checkpoint/ and running the
same command again continues from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from core import __version__, jobs
from core.datasets import DatasetInfo, get_dataset, record_training_samples, texts_by_id
from core.errors import InputError, first_line
from core.jobs import CancelToken
from core.models import weights_hash
from core.options import to_argv, values
from core.scratch import write_text_atomically
from core.store import Store
from core.train_options import ProbeOptions
from core.training import (
    TrainProgress,
    TrainStats,
    evaluate_bits,
    load_tokenizer,
    save_tokenizer,
    train_lm,
    train_tokenizer,
    unigram_bits,
)

__all__ = [
    "ProbeJob",
    "ProbeOutcome",
    "cancel_probe",
    "list_probes",
    "lock_out_dir",
    "prepare_probe",
    "probe_curve",
    "run_probe",
    "split_ids",
    "start_probe_job",
]

MIN_SAMPLES = 10
VAL_SHARE = 0.05  # of the dataset, capped at MAX_VAL samples: enough for a stable estimate
MAX_VAL = 200
INLINE_IDS = 50  # more ids than this go to train_ids.txt / val_ids.txt beside the card
MAX_FP32_BYTES = 16_000_000  # larger weights are saved as bf16 so a probe stays under ~20 MB
COMMIT_SECONDS = 3.0  # how often progress and the curve reach the store


@dataclass
class ProbeOutcome:
    probe_id: str
    status: str  # done | cancelled
    out_dir: Path
    card: dict = field(default_factory=dict)
    step: int = 0
    total_steps: int = 0


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
            f"--fraction {fraction} of {n} samples selects no training sample — raise --fraction",
            ui=f"A training fraction of {fraction} of {n} samples selects no training sample — "
            "raise “Training fraction”.",
        )
    return order[n_val : n_val + n_train], order[:n_val]


# ---- the job: dataset in the store -> probe directory + card + curve -------------------------


@dataclass
class ProbeJob:
    """One probe's training, checked before any work: its dataset, split, directory and row."""

    store: Store
    probe_id: str
    info: DatasetInfo
    out: Path
    opts: ProbeOptions
    resume: dict | None  # the checkpoint's record when the directory holds one to continue
    train_ids: list[str]
    val_ids: list[str]

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint"

    def claim(self) -> None:
        """Create the probes row or take over an existing one (queued, cancelled, failed)."""
        with self.store.transaction() as con:
            if not jobs.claim(con, jobs.PROBES, self.probe_id):
                self.insert_row(con, "running", jobs.owner())

    def insert_row(self, con, status: str, owner) -> None:
        con.execute(
            "INSERT INTO probes (probe_id, dataset, fingerprint, out_dir, settings, status, step, "
            "tokens_seen, seconds, pid, pid_start, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?, now(), now())",
            [
                self.probe_id,
                self.info.name,
                self.info.fingerprint,
                str(self.out.resolve()),
                json.dumps(values(self.opts)),
                status,
                owner.pid if owner else None,
                owner.start if owner else None,
            ],
        )

    def finish(self, status: str, error: str | None = None, val_bits: float | None = None):
        also = {} if val_bits is None else {"val_bits_per_token": val_bits}
        with self.store.transaction() as con:
            jobs.finish(con, jobs.PROBES, self.probe_id, status, error, **also)

    def train_and_write(self, cancel: CancelToken | None, on_progress) -> ProbeOutcome:
        info, ckpt = self.info, self.checkpoint
        train_texts = texts_by_id(self.store, info.name, self.train_ids, info.fingerprint)
        val_texts = texts_by_id(self.store, info.name, self.val_ids, info.fingerprint)
        t_tok = time.monotonic()
        if self.resume:
            tokenizer = load_tokenizer(ckpt / "tokenizer.json")
            tokenizer_seconds = self.resume["tokenizer_seconds"]
        else:
            tokenizer = train_tokenizer(train_texts, self.opts.config.vocab)
            tokenizer_seconds = time.monotonic() - t_tok
            ckpt.mkdir(parents=True, exist_ok=True)
            save_tokenizer(tokenizer, ckpt / "tokenizer.json")
            record = {
                "key": self.opts.key(info.fingerprint),
                "probe_id": self.probe_id,
                "dataset": info.name,
                "fingerprint": info.fingerprint,
                "tokenizer_seconds": tokenizer_seconds,
            }
            write_text_atomically(ckpt / "resume.json", json.dumps(record, indent=1))

        reporter = _Reporter(self.store, self.probe_id, on_progress)
        model, stats = train_lm(
            tokenizer,
            train_texts,
            val_texts,
            self.opts.config,
            self.opts.budget,
            seed=self.opts.seed,
            cancel=cancel,
            on_progress=reporter,
            checkpoint_dir=ckpt,
        )
        reporter.flush()
        if stats.status == "cancelled":
            self.finish("cancelled")
            card = {}
        else:
            card = self.write_probe(
                model, tokenizer, stats, train_texts, val_texts, tokenizer_seconds
            )
            self.record_samples(card["model_hash"])
            shutil.rmtree(ckpt)
            self.finish("done", val_bits=card["val_bits_per_token"])
        return ProbeOutcome(
            self.probe_id, stats.status, self.out, card, stats.steps, stats.total_steps
        )

    def write_probe(
        self, model, tokenizer, stats: TrainStats, train_texts, val_texts, tokenizer_seconds
    ) -> dict:
        """Save weights + tokenizer + card; the card's numbers are measured on the saved weights."""
        out, opts = self.out, self.opts
        n_params = sum(p.numel() for p in model.parameters())
        # bf16 halves the file; evaluating the rounded weights keeps the card honest about it.
        dtype = torch.float32 if 4 * n_params <= MAX_FP32_BYTES else torch.bfloat16
        model.to(dtype).save_pretrained(out)
        model.float()
        tokenizer.save_pretrained(out)
        val_bpt, val_bpb = evaluate_bits(model, tokenizer, val_texts)
        ids = {}
        for role, role_ids in (("train", self.train_ids), ("val", self.val_ids)):
            if len(role_ids) > INLINE_IDS:
                (out / f"{role}_ids.txt").write_text("\n".join(role_ids) + "\n", encoding="utf-8")
                ids[role] = f"{role}_ids.txt"
            else:
                ids[role] = list(role_ids)
        cfg = model.config
        card = {
            "infoprune_version": __version__,
            "kind": "data-probe",
            "dataset": self.info.name,
            "fingerprint": self.info.fingerprint,
            "fraction": opts.fraction,
            "seed": opts.seed,
            "size": opts.config.size,
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
            "vocab": opts.config.vocab,
            "seq_len": opts.config.seq_len,
            "batch_size": opts.config.batch_size,
            "lr": opts.config.peak_lr,
            "budget": {k: v for k, v in asdict(opts.budget.resolved()).items() if v is not None},
            "n_train_samples": len(self.train_ids),
            "n_val_samples": len(self.val_ids),
            "train_ids": ids["train"],
            "val_ids": ids["val"],
            "steps": stats.steps,
            "tokens_seen": stats.tokens_seen,
            "train_tokens": stats.train_tokens,
            "epochs": round(stats.tokens_seen / max(stats.train_tokens, 1), 3),
            "training_seconds": round(stats.seconds, 1),
            "tokenizer_seconds": round(tokenizer_seconds, 1),
            "device": stats.device,
            "bf16_autocast": stats.bf16_autocast,
            "train_bits_per_token": stats.train_bits_per_token,
            "val_bits_per_token": val_bpt,
            "val_bits_per_byte": val_bpb,
            "val_unigram_bits_per_token": unigram_bits(tokenizer, train_texts, val_texts),
            "model_hash": weights_hash(out),
        }
        (out / "infoprune.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
        return card

    def record_samples(self, model_hash: str) -> None:
        """Which samples trained (and validated) these weights, for Explore to flag."""
        record_training_samples(
            self.store,
            model_hash,
            self.info.fingerprint,
            {"train": self.train_ids, "val": self.val_ids},
        )


def prepare_probe(
    store: Store, dataset: str, out_dir, opts: ProbeOptions, probe_id: str | None = None
) -> ProbeJob:
    """Every check a user can fail, before any row is written or any work is done.

    The probe id is the one of the checkpoint being resumed, else PROBE_ID, else a new one.
    """
    opts.check()
    info = get_dataset(store, dataset)
    out = Path(out_dir).expanduser()
    resume = _check_out_dir(out, opts.key(info.fingerprint))
    train_ids, val_ids = split_ids(_load_ids(store, dataset), opts.fraction, opts.seed)
    probe_id = resume["probe_id"] if resume else probe_id or "probe-" + uuid.uuid4().hex[:8]
    return ProbeJob(store, probe_id, info, out, opts, resume, train_ids, val_ids)


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
    job = prepare_probe(store, dataset, out_dir, opts, probe_id)
    with lock_out_dir(job.out):
        job.claim()
        try:
            return job.train_and_write(cancel, on_progress)
        except BaseException as exc:
            job.finish("failed", error=first_line(exc))
            raise


@contextlib.contextmanager
def lock_out_dir(out: Path) -> Iterator[None]:
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


def _check_out_dir(out: Path, key: str) -> dict | None:
    """None for a fresh directory, the resume record for a matching checkpoint, else an error."""
    if out.exists() and not out.is_dir():
        raise InputError(
            f"--out {out} is a file — pass a directory path",
            ui=f"{out} is a file — give a folder as the output directory.",
        )
    if not out.exists() or all(
        f == out / "checkpoint" / "lock" for f in out.rglob("*") if f.is_file()
    ):
        return None
    record = out / "checkpoint" / "resume.json"
    if record.exists():
        try:
            resume = json.loads(record.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            resume = None
        if not isinstance(resume, dict):
            raise InputError(
                f"{record} is damaged, so the probe in {out} cannot resume — pass a new --out, "
                "or delete that checkpoint folder to train there from the start",
                ui=f"{record} is damaged, so the probe in {out} cannot resume — choose a new "
                "output directory, or delete that checkpoint folder to train there anew.",
            )
        if resume.get("key") == key:
            return resume
        raise InputError(
            f"{out} holds an unfinished probe trained with other options — rerun its command "
            "to resume it, or pass a new --out",
            ui=f"{out} holds an unfinished probe trained with other options — start it with "
            "those options to resume it, or choose a new output directory.",
        )
    raise InputError(
        f"output directory {out} is not empty — pass a new --out or empty it",
        ui=f"Output directory {out} is not empty — choose a new one or empty it.",
    )


def _load_ids(store: Store, dataset: str) -> list[str]:
    rows = store.query(
        "SELECT sample_id FROM samples WHERE dataset = ? ORDER BY row_idx", [dataset]
    )
    return [r[0] for r in rows]


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


# ---- what the UI calls ------------------------------------------------------------------------


def start_probe_job(store: Store, dataset: str, out_dir: str | Path, opts: ProbeOptions) -> str:
    """Check the inputs, queue a probes row and start `infoprune train-probe` in the background."""
    job = prepare_probe(store, dataset, out_dir, opts)
    probe_id = job.probe_id
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
            job.insert_row(con, "queued", None)
    argv = ["train-probe", "--dataset", dataset, "--out", str(job.out.resolve()), *to_argv(opts)]
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
