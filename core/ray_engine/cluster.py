"""What both Ray modes share: the cluster, the plan checked on the driver, the scoring actors.

Each actor holds one BatchScorer (core/batch_scorer.py), the same step the local loop runs, so the
numbers are the local ones; the driver resolves everything that can fail before work starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.batch_scorer import BatchScorer
from core.corpus import CorpusStats
from core.datasets import DatasetChanged
from core.errors import InputError, first_line
from core.measures.base import Measure
from core.score_options import ScoreOptions

RAY_MISSING = "Ray is not installed — pip install 'infoprune[ray]'"
BYTES_PER_TOKEN = 4.0  # typical BPE on English; only sizes batches, never changes a number
BATCH_TOKEN_FACTOR = 4  # forward batches per Ray batch: amortises per-call overhead
MAX_BATCH_ROWS = 4096
RETRIES = 3  # actor restarts / task retries: survive a lost node, not a deterministic bug


def require_ray():
    """Import Ray, or say in one line how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InputError(RAY_MISSING) from exc
    return ray


@contextlib.contextmanager
def ray_cluster(address: str | None = None) -> Iterator:
    """Reuse this process's Ray, connect to ADDRESS (auto, ray://host:port), or start one here."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"address": address} if address else {"num_cpus": os.cpu_count()}
    try:
        ray.init(include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError) as exc:
        raise InputError(
            f"cannot reach a Ray cluster at {address} ({first_line(exc)}) — start one with "
            "`ray start --head` or fix --address"
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


# ---- planning: what the workers will do, checked here before any work --------------------------


@dataclass(frozen=True)
class ModelPlan:
    model_hash: str | None
    settings: dict  # engine, window, stride, dtype: part of the run's configuration key
    device: str  # as a worker resolves it ("cuda" for one GPU per actor)
    num_gpus: int  # per actor
    opts: ScoreOptions  # the user's options with window, stride, dtype and device resolved


def plan_model(ray, opts: ScoreOptions) -> ModelPlan:
    """Check the model without loading its weights; resolve device and dtype on a worker."""
    if opts.model_free:
        return ModelPlan(None, {"engine": "ray"}, "cpu", 0, opts)
    from transformers import AutoConfig

    from core.devices import max_positions, resolve_device_and_dtype, resolve_window
    from core.models import check_model_dir, resolve_model_dir, weights_hash

    path = resolve_model_dir(opts.model, opts.allow_pickle)
    check_model_dir(path, opts.allow_pickle, opts.trust_remote_code)
    config = AutoConfig.from_pretrained(path, trust_remote_code=opts.trust_remote_code)
    window, stride = resolve_window(opts.window, opts.stride, max_positions(config))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if opts.device.startswith("cuda") and not gpus:
        raise InputError(
            f"--device {opts.device} but the Ray cluster has no GPU — pass --device cpu"
        )
    num_gpus = 1 if opts.device.startswith("cuda") or (gpus and opts.device == "auto") else 0
    # Inside an actor its one GPU is always cuda:0, whichever index the user named.
    device = "cuda" if opts.device.startswith("cuda") else opts.device
    probe = ray.remote(num_cpus=0, num_gpus=num_gpus, max_retries=RETRIES)(resolve_device_and_dtype)
    try:
        device, dtype = ray.get(probe.remote(device, opts.dtype))
    except Exception as exc:
        raise user_error(exc) from exc
    settings = {"engine": "ray", "window": window, "stride": stride, "dtype": dtype}
    resolved = dataclasses.replace(opts, window=window, stride=stride, dtype=dtype, device=device)
    return ModelPlan(weights_hash(path), settings, device, num_gpus, resolved)


def batch_rows(bytes_per_row: float, max_batch_tokens: int) -> int:
    """Rows per Ray batch so that a batch holds about BATCH_TOKEN_FACTOR forward batches."""
    tokens_per_row = max(bytes_per_row / BYTES_PER_TOKEN, 1.0)
    rows = BATCH_TOKEN_FACTOR * max_batch_tokens / tokens_per_row
    return int(min(max(rows, 1), MAX_BATCH_ROWS))


def actor_pool(ray, plan: ModelPlan, actors: int | None, spare_cpus: int) -> tuple[int, dict]:
    """How many scoring actors, and the resources of each: one per GPU, else one per CPU."""
    if actors is not None and actors < 1:
        raise InputError("--actors must be a positive number")
    res = ray.cluster_resources()
    if plan.num_gpus:
        n = actors or int(res.get("GPU", 0))
        return n, {"num_gpus": 1, "num_cpus": 1}
    # Ray Data's own read tasks need a free CPU, or the pipeline waits for ever.
    n = actors or max(1, int(res.get("CPU", 1)) - spare_cpus)
    return n, {"num_cpus": 1}


# ---- the scoring actors ------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorWork:
    """What every actor of a pool is built with, and how the pool is sized."""

    plan: ModelPlan
    measures: list[Measure]
    corpus: CorpusStats | None  # the dataset's statistics, prepared on the driver
    n_actors: int
    resources: dict
    rows: int  # rows per batch


def map_scores(ray, ds, work: ActorWork):
    """DS with its `text` column replaced by score columns (and `_keep`), scored by the actors."""
    with warnings.catch_warnings():
        # Ray 2.60 deprecates extra remote args, yet they are still how actors get finite
        # restarts (its default is to restart for ever, even after a deterministic crash).
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            ScoringActor,
            batch_size=work.rows,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=work.n_actors),
            fn_constructor_kwargs={
                "opts": work.plan.opts,
                "measures": work.measures,
                "corpus": work.corpus,
                "model_hash": work.plan.model_hash,
            },
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
            **work.resources,
        )


class ScoringActor:
    """One per actor: the BatchScorer, loaded once; each call scores a batch of (text, ids) rows.

    Rows whose text is null or blank come back unscored with `_keep` false, as ingest skips them.
    """

    def __init__(
        self,
        opts: ScoreOptions,
        measures: list[Measure],
        corpus: CorpusStats | None,
        model_hash: str | None,
    ):
        self.step = BatchScorer(opts, measures, model_hash=model_hash)
        self.corpus = corpus

    def __call__(self, batch: pa.Table) -> pa.Table:
        text = batch.column("text")
        if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
            text = text.cast(pa.large_string())
        blank = pc.or_kleene(
            pc.equal(pc.utf8_length(text), 0), pc.fill_null(pc.utf8_is_space(text), False)
        )
        keep = pc.invert(pc.fill_null(blank, True))
        scores = self.step.score(text.filter(keep).to_pylist(), self.corpus)
        # Back to one row per input row: kept rows in order, nulls for skipped ones.
        position = np.cumsum(keep.to_numpy(zero_copy_only=False)) - 1
        take = pa.array(position, mask=~keep.to_numpy(zero_copy_only=False))
        out = batch.drop_columns(["text"])
        for name in scores.column_names:
            out = out.append_column(name, scores.column(name).take(take))
        return out.append_column("_keep", keep)


# ---- errors ------------------------------------------------------------------------------------


def user_error(exc: BaseException) -> BaseException:
    """An InputError raised inside a Ray worker, unwrapped to its one-line message."""
    seen = exc
    for _ in range(8):
        if isinstance(seen, InputError) and type(seen) is InputError:
            return seen
        cause = getattr(seen, "cause", None) or seen.__cause__
        if cause is None:
            break
        seen = cause
    if isinstance(exc, InputError):
        return InputError(first_line(exc))
    return exc


@contextlib.contextmanager
def worker_errors_unwrapped() -> Iterator[None]:
    """Inside: an InputError from a worker surfaces as itself, not wrapped in Ray's error (a
    changed dataset, raised here on the driver, stays what it is, so the run starts afresh)."""
    try:
        yield
    except DatasetChanged:
        raise
    except Exception as exc:
        err = user_error(exc)
        if err is exc:
            raise
        raise err from exc
