"""Scale-out scoring on Ray Data: the local engine's Scorer in an actor pool, one model per actor.

Two modes. A dataset in the store is scored on the cluster and committed by this process (the
store's one writer) as an ordinary run. A corpus in Parquet/JSONL shards is read by Ray Data and
written as one Parquet score shard per input file, named from the input's path, so a restarted
job skips the shards already written; `ingest-scores` attaches such a folder to a store dataset.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.datasets import DatasetChanged, change_since
from core.errors import InputError
from core.jobs import CancelToken
from core.measures.base import Measure
from core.scoring import (
    TARGET_CHUNK_SECONDS,
    Progress,
    RunOutcome,
    ScoreOptions,
    is_model_free,
    validate_options,
)
from core.store import SCORE_COLUMNS, Store

RAY_MISSING = "Ray is not installed — pip install 'infoprune[ray]'"
MANIFEST = "_manifest.json"
BYTES_PER_TOKEN = 4.0  # typical BPE on English; only sizes batches, never changes a number
BATCH_TOKEN_FACTOR = 4  # forward batches per Ray batch: amortises per-call overhead
MAX_BATCH_ROWS = 4096
RETRIES = 3  # actor restarts / task retries: survive a lost node, not a deterministic bug
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


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
            f"cannot reach a Ray cluster at {address} ({_first_line(exc)}) — start one with "
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


def plan_model(ray, opts: ScoreOptions) -> ModelPlan:
    """Check the model without loading its weights; resolve device and dtype on a worker."""
    if is_model_free(opts.model):
        return ModelPlan(None, {"engine": "ray"}, "cpu", 0)
    from transformers import AutoConfig

    from core.engine import EngineSettings, _resolve_window, model_max_positions
    from core.models import check_model_dir, resolve_model_dir, weights_hash

    path = resolve_model_dir(opts.model, opts.allow_pickle)
    check_model_dir(path, opts.allow_pickle, opts.trust_remote_code)
    config = AutoConfig.from_pretrained(path, trust_remote_code=opts.trust_remote_code)
    window, stride = _resolve_window(
        EngineSettings(window=opts.window, stride=opts.stride),
        model_max_positions(SimpleNamespace(config=config)),
    )
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if opts.device.startswith("cuda") and not gpus:
        raise InputError(
            f"--device {opts.device} but the Ray cluster has no GPU — pass --device cpu"
        )
    num_gpus = 1 if opts.device.startswith("cuda") or (gpus and opts.device == "auto") else 0
    # Inside an actor its one GPU is always cuda:0, whichever index the user named.
    device = "cuda" if opts.device.startswith("cuda") else opts.device
    probe = ray.remote(num_cpus=0, num_gpus=num_gpus, max_retries=RETRIES)(_resolve_on_worker)
    try:
        device, dtype = ray.get(probe.remote(device, opts.dtype))
    except Exception as exc:
        raise _user_error(exc) from exc
    settings = {"engine": "ray", "window": window, "stride": stride, "dtype": dtype}
    return ModelPlan(weights_hash(path), settings, device, num_gpus)


def _resolve_on_worker(device: str, dtype: str) -> tuple[str, str]:
    from core.engine import _resolve_device, _resolve_dtype

    resolved = _resolve_device(device)
    return resolved, _resolve_dtype(dtype, resolved)


def split_measures(measures: list[Measure]) -> tuple[list[Measure], list[Measure]]:
    """(per-batch measures, those needing a corpus-wide pass) — see docs/scale-out.md."""
    corpus = [m for m in measures if type(m).prepare is not Measure.prepare]
    return [m for m in measures if m not in corpus], corpus


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


def _map_scores(ray, ds, opts: ScoreOptions, plan: ModelPlan, measures, n_actors, resources, rows):
    with warnings.catch_warnings():
        # Ray 2.60 deprecates extra remote args, yet they are still how actors get finite
        # restarts (its default is to restart for ever, even after a deterministic crash).
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            BatchScorer,
            batch_size=rows,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            fn_constructor_kwargs={"opts": opts, "plan": plan, "measures": measures},
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
            **resources,
        )


class BatchScorer:
    """One per actor: loads the model once; each call scores a batch of (text, ids) rows.

    Rows whose text is null or blank come back unscored with `_keep` false, as ingest skips them.
    """

    def __init__(self, opts: ScoreOptions, plan: ModelPlan, measures: list[Measure]):
        self.measures = measures
        self.scorer = None
        if plan.model_hash is None:
            return
        from core.engine import EngineSettings, Scorer
        from core.models import load_model

        lm = load_model(opts.model, opts.allow_pickle, opts.trust_remote_code)
        if lm.model_hash != plan.model_hash:
            raise InputError(
                f"the weights of {opts.model} differ on this node (hash {lm.model_hash}, driver "
                f"{plan.model_hash}) — give every node the same model files"
            )
        self.scorer = Scorer(
            lm.model,
            lm.tokenizer,
            EngineSettings(
                window=plan.settings["window"],
                stride=plan.settings["stride"],
                max_batch_tokens=opts.max_batch_tokens,
                dtype=plan.settings["dtype"],
                device=plan.device,
                compile=opts.compile,
            ),
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        from core.scoring import score_table

        text = batch.column("text")
        if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
            text = text.cast(pa.large_string())
        blank = pc.or_kleene(
            pc.equal(pc.utf8_length(text), 0), pc.fill_null(pc.utf8_is_space(text), False)
        )
        keep = pc.invert(pc.fill_null(blank, True))
        texts = text.filter(keep).to_pylist()
        model_scores = self.scorer.score_texts(texts) if self.scorer else None
        n_bytes = [len(t.encode("utf-8")) for t in texts]
        rows = [(None, None, t) for t in texts]
        scores = score_table("", rows, n_bytes, model_scores, self.measures)
        scores = scores.drop_columns(["run_id", "sample_id"])
        # Back to one row per input row: kept rows in order, nulls for skipped ones.
        position = np.cumsum(keep.to_numpy(zero_copy_only=False)) - 1
        take = pa.array(position, mask=~keep.to_numpy(zero_copy_only=False))
        out = batch.drop_columns(["text"])
        for name in scores.column_names:
            out = out.append_column(name, scores.column(name).take(take))
        return out.append_column("_keep", keep)


# ---- mode 1: a dataset in the store ------------------------------------------------------------


def score_dataset_ray(
    store: Store,
    dataset: str,
    opts: ScoreOptions,
    address: str | None = None,
    actors: int | None = None,
    cancel: CancelToken | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunOutcome:
    """Score DATASET on a Ray cluster into the store; a run like score_dataset's, engine 'ray'."""
    from core.datasets import get_dataset
    from core.measures.registry import all_measures
    from core.scoring import claim_run, complete_run, config_key, finish_run, record_probe_samples

    require_ray()
    cancel = cancel or CancelToken()
    validate_options(opts)
    info = get_dataset(store, dataset)
    with ray_cluster(address) as ray:
        plan = plan_model(ray, opts)
        measures = [m for m in all_measures() if plan.model_hash or not m.needs_model]
        settings = {**plan.settings, "measures": [m.name for m in measures], "limit": opts.limit}
        key = config_key(info.fingerprint, plan.model_hash, settings)
        run_id, status, _ = claim_run(
            store, info, opts, plan.model_hash, settings, key, device=plan.device
        )
        if status == "done":
            return RunOutcome(run_id, "done", reused=True)
        try:
            if plan.model_hash:
                record_probe_samples(store, opts.model, plan.model_hash, info)
            for m in measures:
                m.prepare(store, info)
            status = _score_into_store(
                ray, store, run_id, info, opts, plan, measures, actors, cancel, on_progress
            )
        except BaseException as exc:
            error = _first_line(_user_error(exc))
            finish_run(store, run_id, "failed", error, afresh=isinstance(exc, DatasetChanged))
            if _user_error(exc) is exc:
                raise
            raise _user_error(exc) from exc
        if status == "done":
            complete_run(store, run_id)
        else:
            finish_run(store, run_id, status)
    return RunOutcome(run_id, status, reused=False)


def _read_unscored(store: Store, dataset: str, run_id: str, limit: int | None) -> pa.Table:
    """The run's samples that have no score yet (a resumed run skips the committed ones)."""
    with store.connect() as con:
        return con.sql(
            "SELECT s.sample_id, s.text FROM (SELECT sample_id, row_idx, text FROM samples "
            "WHERE dataset = ? ORDER BY row_idx LIMIT ?) s WHERE s.sample_id NOT IN "
            "(SELECT sample_id FROM scores WHERE run_id = ?) ORDER BY s.row_idx",
            params=[dataset, limit if limit is not None else 2**62, run_id],
        ).to_arrow_table()


def _score_into_store(ray, store, run_id, info, opts, plan, measures, actors, cancel, on_progress):
    todo = _read_unscored(store, info.name, run_id, opts.limit)
    n_total, n_done, tokens_done, bytes_done, bytes_total, seconds = store.query(
        "SELECT n_total, n_done, tokens_done, bytes_done, bytes_total, seconds FROM runs "
        "WHERE run_id = ?",
        [run_id],
    )[0]
    if todo.num_rows == 0:
        return "done"
    n_actors, resources = actor_pool(ray, plan, actors, spare_cpus=0)
    avg_bytes = sum(pc.binary_length(todo.column("text")).to_pylist()) / todo.num_rows
    rows = min(batch_rows(avg_bytes, opts.max_batch_tokens), math.ceil(todo.num_rows / n_actors))
    blocks = [todo.slice(i, rows) for i in range(0, todo.num_rows, rows)]
    ds = _map_scores(
        ray, ray.data.from_arrow(blocks), opts, plan, measures, n_actors, resources, rows
    )
    start = time.monotonic()
    last_commit = start
    pending: list[pa.Table] = []

    def commit() -> None:
        nonlocal n_done, tokens_done, bytes_done
        table = pa.concat_tables(pending).drop_columns(["_keep"])
        pending.clear()
        n_done += table.num_rows
        bytes_done += pc.sum(table.column("n_bytes")).as_py() or 0
        if "n_tokens" in table.column_names:
            tokens_done += pc.sum(table.column("n_tokens")).as_py() or 0
        total_s = seconds + time.monotonic() - start
        table = table.append_column("run_id", pa.array([run_id] * table.num_rows, pa.string()))
        with store.transaction() as con:
            change = change_since(con, info.name, info.fingerprint)
            if change:
                raise DatasetChanged(
                    f"run {run_id} stopped: {change} while it was being scored — "
                    "run the same command to score it afresh"
                )
            con.register("_ray_scores", table)
            cols = ", ".join(table.column_names)
            con.execute(f"INSERT INTO scores ({cols}) SELECT {cols} FROM _ray_scores")
            con.unregister("_ray_scores")
            con.execute(
                "UPDATE runs SET n_done = ?, tokens_done = ?, bytes_done = ?, seconds = ?, "
                "tokens_per_s = ?, updated_at = now() WHERE run_id = ?",
                [
                    n_done,
                    tokens_done,
                    bytes_done,
                    total_s,
                    tokens_done / total_s if plan.model_hash and total_s else None,
                    run_id,
                ],
            )
        if on_progress:
            rate = bytes_done / total_s if total_s else None
            on_progress(
                Progress(
                    n_done=n_done,
                    n_total=n_total,
                    tokens_per_s=tokens_done / total_s if plan.model_hash and total_s else None,
                    bytes_per_s=rate,
                    eta_s=(bytes_total - bytes_done) / rate if rate else None,
                )
            )

    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        pending.append(batch)
        if time.monotonic() - last_commit >= TARGET_CHUNK_SECONDS:
            commit()
            last_commit = time.monotonic()
        if cancel.cancelled:
            break
    if pending:
        commit()
    return "cancelled" if cancel.cancelled and n_done < n_total else "done"


# ---- mode 2: shards in, score shards out --------------------------------------------------------


@dataclass
class ShardReport:
    output_dir: str
    status: str  # done | cancelled
    n_files: int
    n_already_done: int
    n_samples: int
    n_skipped: int
    n_tokens: int
    seconds: float

    def line(self) -> str:
        return (
            f"scored {self.n_files - self.n_already_done} of {self.n_files} shards "
            f"({self.n_already_done} already done): {self.n_samples} samples, {self.n_skipped} "
            f"skipped (null/empty/whitespace), {self.n_tokens} tokens, {self.seconds:.1f} s "
            f"-> {self.output_dir}"
        )


def list_input_files(pattern: str) -> tuple[list[str], str, Path]:
    """The files of a glob (sorted), their format, and the folder their ids are relative to."""
    files = sorted(
        f for f in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(f)
    )
    if not files:
        raise InputError(f"no files match {pattern}")
    kinds = {_shard_kind(f) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise InputError(
            f"{pattern} must match Parquet files or JSONL files only, one format "
            f"(found: {', '.join(sorted({Path(f).suffix or f for f in files}))})"
        )
    root = Path(os.path.commonpath([os.path.abspath(os.path.dirname(f)) for f in files]))
    return [os.path.abspath(f) for f in files], kinds.pop(), root


def _shard_kind(path: str) -> str | None:
    name = path.lower().removesuffix(".gz").removesuffix(".zst")
    if name.endswith(".parquet"):
        return "parquet"
    return "json" if name.endswith(_JSON_SUFFIXES) else None


def shard_name(input_path: str, root: Path) -> str:
    """Deterministic output name for an input file: readable stem + hash of its relative path."""
    rel = os.path.relpath(input_path, root)
    digest = hashlib.sha256(rel.encode()).hexdigest()[:12]
    stem = Path(rel).name.split(".")[0][:40]
    return f"scores-{stem}-{digest}.parquet"


def _columns_of(path: str, kind: str) -> list[str]:
    if kind == "parquet":
        return pq.read_schema(path).names
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return list(json.loads(line))
    raise InputError(f"{path} holds no JSON lines")


def _bytes_per_row(path: str, kind: str, text_column: str) -> float:
    """A cheap estimate: Parquet footers, or the head of a JSONL file."""
    if kind == "parquet":
        meta = pq.read_metadata(path)
        if not meta.num_rows:
            return 1000.0
        col = meta.schema.names.index(text_column)
        size = sum(
            meta.row_group(i).column(col).total_uncompressed_size
            for i in range(meta.num_row_groups)
        )
        return size / meta.num_rows
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return len(head) / max(head.count(b"\n"), 1)


def score_shards(
    input_glob: str,
    output_dir: str,
    opts: ScoreOptions,
    text_column: str | None = None,
    id_column: str | None = None,
    address: str | None = None,
    actors: int | None = None,
    cancel: CancelToken | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> ShardReport:
    """Score every file of INPUT_GLOB into OUTPUT_DIR (one score shard per file) + a manifest."""
    from core.ingest import choose_text_column
    from core.measures.registry import all_measures

    require_ray()
    cancel = cancel or CancelToken()
    validate_options(opts)
    if opts.limit is not None:
        raise InputError("--limit applies to store datasets only — drop it with --input")
    files, kind, root = list_input_files(input_glob)
    columns = _columns_of(files[0], kind)
    text_col = choose_text_column(columns, text_column)
    if id_column is not None and id_column == text_col:
        raise InputError(f"--id-column and the text column are both '{text_col}' — pick another")
    if id_column is not None and id_column not in columns:
        raise InputError(f"id column '{id_column}' not found; columns are: {', '.join(columns)}")
    out = Path(output_dir).expanduser()
    started = time.monotonic()
    with ray_cluster(address) as ray:
        plan = plan_model(ray, opts)
        measures = [m for m in all_measures() if plan.model_hash or not m.needs_model]
        per_batch, deferred = split_measures(measures)
        settings = {**plan.settings, "measures": [m.name for m in measures], "limit": None}
        manifest = {
            "format": "infoprune-score-shards/1",
            "status": "running",
            "model": opts.model,
            "model_hash": plan.model_hash,
            "settings": settings,
            "device": plan.device,
            "input": input_glob,
            "input_root": str(root),
            "text_column": text_col,
            "id_column": id_column,
            "computed_measures": [m.name for m in per_batch],
            # Filled from the dataset's own word counts when attached: see docs/scale-out.md.
            "deferred_measures": [m.name for m in deferred],
        }
        _check_or_write_manifest(out, manifest)
        names = {f: shard_name(f, root) for f in files}
        done = {p.name for p in out.glob("scores-*.parquet")}
        pending = [f for f in files if names[f] not in done]
        status = "done"
        if pending:
            status = _score_pending_shards(
                ray,
                pending,
                kind,
                text_col,
                id_column,
                root,
                names,
                out,
                opts,
                plan,
                per_batch,
                actors,
                cancel,
                on_progress,
            )
    entries = [_shard_entry(out / names[f], f, root) for f in files if (out / names[f]).exists()]
    manifest.update(
        status=status if len(entries) == len(files) else "cancelled",
        seconds=round(time.monotonic() - started, 3),
        files=entries,
        n_files=len(files),
        n_samples=sum(e["n_samples"] for e in entries),
        n_skipped=sum(e["n_skipped"] for e in entries),
        n_tokens=sum(e["n_tokens"] for e in entries),
        n_bytes=sum(e["n_bytes"] for e in entries),
    )
    _write_json(out / MANIFEST, manifest)
    return ShardReport(
        output_dir=str(out),
        status=manifest["status"],
        n_files=len(files),
        n_already_done=len(files) - len(pending),
        n_samples=manifest["n_samples"],
        n_skipped=manifest["n_skipped"],
        n_tokens=manifest["n_tokens"],
        seconds=manifest["seconds"],
    )


_CONFIG_KEYS = ("model_hash", "settings", "input_root", "text_column", "id_column")


def _check_or_write_manifest(out: Path, manifest: dict) -> None:
    """A restart must match the configuration that wrote the shards already there."""
    path = out / MANIFEST
    if path.exists():
        old = _read_manifest(out)
        changed = [k for k in _CONFIG_KEYS if old.get(k) != manifest[k]]
        if changed:
            raise InputError(
                f"{out} holds scores of another configuration ({', '.join(changed)} differ) "
                "— pass a new --output folder"
            )
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty and holds no {MANIFEST} — pass a new --output folder")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, manifest)


def _score_pending_shards(
    ray,
    pending,
    kind,
    text_col,
    id_column,
    root,
    names,
    out,
    opts,
    plan,
    measures,
    actors,
    cancel,
    on_progress,
) -> str:
    n_actors, resources = actor_pool(ray, plan, actors, spare_cpus=1)
    rows = batch_rows(_bytes_per_row(pending[0], kind, text_col), opts.max_batch_tokens)
    wanted = [text_col] + ([id_column] if id_column else [])
    _settle_fsspec_http()
    with _preserving_order(ray):
        # Reads take no CPU slot (actors hold them); Ray retries a failed read task 3 times.
        if kind == "parquet":
            ds = ray.data.read_parquet(pending, include_paths=True, num_cpus=0)
        else:
            ds = ray.data.read_json(pending, lines=True, include_paths=True, num_cpus=0)
    ds = ds.select_columns([*wanted, "path"]).rename_columns({text_col: "text"})
    ds = _map_scores(ray, ds, opts, plan, measures, n_actors, resources, rows)
    n_total = sum(pq.read_metadata(f).num_rows for f in pending) if kind == "parquet" else None
    writer = _ShardWriter(out, root, names, id_column)
    start = time.monotonic()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        writer.add(batch)
        if on_progress:
            elapsed = time.monotonic() - start
            rate = writer.bytes_seen / elapsed if elapsed else None
            on_progress(
                Progress(
                    n_done=writer.rows_seen,
                    n_total=n_total or 0,
                    tokens_per_s=writer.tokens_seen / elapsed
                    if plan.model_hash and elapsed
                    else None,
                    bytes_per_s=rate,
                    eta_s=None,
                )
            )
        if cancel.cancelled:
            return "cancelled"
    writer.finish(pending)
    return "done"


def _settle_fsspec_http() -> None:
    """Import fsspec's HTTP filesystem once, here, or mark it absent.

    Ray Data's file listing threads each try `from fsspec.implementations.http import ...`; without
    aiohttp that import fails, and threads racing on the failing import intermittently get a
    half-built module (ImportError, not the ModuleNotFoundError Ray handles). A None entry in
    sys.modules makes every later attempt a clean ModuleNotFoundError.
    """
    try:
        import fsspec.implementations.http  # noqa: F401
    except ModuleNotFoundError:
        sys.modules["fsspec.implementations.http"] = None
    except ImportError:
        pass


@contextlib.contextmanager
def _preserving_order(ray) -> Iterator[None]:
    """Datasets created inside deliver rows in input order (a default id is a row's position).

    A dataset copies the global DataContext when created, so the setting is restored at once.
    """
    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = before


class _ShardWriter:
    """Collects the scores of each input file as rows arrive in order; writes it when complete."""

    def __init__(self, out: Path, root: Path, names: dict[str, str], id_field: str | None):
        self.out, self.root, self.names, self.id_field = out, root, names, id_field
        self.current: str | None = None
        self.parts: list[pa.Table] = []
        self.row = 0
        self.written: set[str] = set()
        self.rows_seen = self.tokens_seen = self.bytes_seen = 0

    def add(self, batch: pa.Table) -> None:
        paths = batch.column("path").to_pylist()
        start = 0
        for i in range(1, len(paths) + 1):
            if i == len(paths) or paths[i] != paths[start]:
                self._add_run(os.path.abspath(paths[start]), batch.slice(start, i - start))
                start = i

    def _add_run(self, path: str, rows: pa.Table) -> None:
        if path != self.current:
            if self.current is not None:
                self._write(self.current)
            if path in self.written:
                raise RuntimeError(f"rows of {path} arrived out of order")
            self.current, self.parts, self.row = path, [], 0
        n = rows.num_rows
        if self.id_field:
            ids = rows.column(self.id_field).cast(pa.string())
            if ids.null_count:
                bad = self.row + pc.index(pc.is_null(ids), True).as_py()
                raise InputError(f"id column is empty at row {bad} of {path} — ids must be set")
        else:
            rel = os.path.relpath(path, self.root)
            ids = pa.array([f"{rel}:{i}" for i in range(self.row, self.row + n)], pa.string())
        self.row += n
        self.rows_seen += n
        scored = rows.drop_columns(["path"] + ([self.id_field] if self.id_field else []))
        scored = scored.append_column("sample_id", ids).filter(rows.column("_keep"))
        self.bytes_seen += pc.sum(scored.column("n_bytes")).as_py() or 0
        if "n_tokens" in scored.column_names:
            self.tokens_seen += pc.sum(scored.column("n_tokens")).as_py() or 0
        self.parts.append(scored)

    def _write(self, path: str) -> None:
        table = pa.concat_tables(self.parts) if self.parts else None
        _write_shard(self.out / self.names[path], table, n_rows=self.row)
        self.written.add(path)

    def finish(self, pending: list[str]) -> None:
        if self.current is not None:
            self._write(self.current)
        for path in pending:  # files with no rows at all never came through the pipeline
            if path not in self.written:
                _write_shard(self.out / self.names[path], None, n_rows=0)


def _write_shard(dest: Path, table: pa.Table | None, n_rows: int) -> None:
    """Write atomically (temp file + rename), so a file that exists is a finished shard."""
    if table is None:
        table = pa.table({"sample_id": pa.array([], pa.string())})
    table = table.drop_columns(["_keep"]) if "_keep" in table.column_names else table
    order = ["sample_id"] + [c for c in table.column_names if c != "sample_id"]
    meta = {"n_rows": n_rows, "n_samples": table.num_rows}
    table = table.select(order).replace_schema_metadata({"infoprune": json.dumps(meta)})
    tmp = dest.with_name(f".{dest.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, dest)


def _shard_entry(path: Path, input_path: str, root: Path) -> dict:
    meta = pq.read_metadata(path)
    info = json.loads(meta.metadata[b"infoprune"])
    table = pq.read_table(
        path, columns=[c for c in ("n_tokens", "n_bytes") if c in meta.schema.names]
    )
    return {
        "input": os.path.relpath(input_path, root),
        "output": path.name,
        "n_rows": info["n_rows"],
        "n_samples": meta.num_rows,
        "n_skipped": info["n_rows"] - meta.num_rows,
        "n_tokens": int(pc.sum(table.column("n_tokens")).as_py() or 0)
        if "n_tokens" in table.column_names
        else 0,
        "n_bytes": int(pc.sum(table.column("n_bytes")).as_py() or 0)
        if "n_bytes" in table.column_names
        else 0,
    }


# ---- attaching score shards to a store dataset ------------------------------------------------


def ingest_score_shards(store: Store, output_dir: str, dataset: str) -> RunOutcome:
    """Attach a finished score-shard folder to DATASET as a done run (ids must match exactly)."""
    from core.datasets import get_dataset
    from core.measures.registry import all_measures
    from core.scoring import config_key

    out = Path(output_dir).expanduser()
    manifest = _read_manifest(out)
    if manifest.get("status") != "done":
        raise InputError(
            f"{out} is unfinished ({len(manifest.get('files', []))} of "
            f"{manifest.get('n_files', '?')} shards) — run the same score command again"
        )
    paths = [_check_shard(out, e) for e in manifest["files"]]
    info = get_dataset(store, dataset)
    settings = manifest["settings"]
    key = config_key(info.fingerprint, manifest["model_hash"], settings)
    found = store.query(
        "SELECT run_id FROM runs WHERE config_key = ? AND status = 'done' LIMIT 1", [key]
    )
    if found:
        return RunOutcome(found[0][0], "done", reused=True)
    scores = _read_shards(paths)
    _check_ids(store, info.name, scores.column("sample_id"), out)
    deferred = [m for m in all_measures() if m.name in manifest.get("deferred_measures", [])]
    if deferred:
        scores = _add_deferred(store, info, scores, deferred)
    return _insert_run(store, info, manifest, settings, key, scores)


def _read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.exists():
        raise InputError(f"{out} has no {MANIFEST} — pass a folder written by `score --output`")
    try:
        manifest = json.loads(path.read_text())
        manifest["settings"]  # noqa: B018 - the one key every manifest has
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path} is corrupt ({_first_line(exc)}) — re-run the score command"
        ) from exc
    return manifest


def _check_shard(out: Path, entry: dict) -> Path:
    path = out / entry["output"]
    if not path.exists():
        raise InputError(
            f"score shard {entry['output']} (for {entry['input']}) is missing — "
            "run the same score command again to rewrite it"
        )
    try:
        meta = pq.read_metadata(path)
    except Exception as exc:
        raise InputError(
            f"score shard {path} is corrupt ({_first_line(exc)}) — delete it and run the same "
            "score command again"
        ) from exc
    if meta.num_rows != entry["n_samples"]:
        raise InputError(
            f"score shard {path} holds {meta.num_rows} rows, the manifest says "
            f"{entry['n_samples']} — delete it and run the same score command again"
        )
    return path


def _read_shards(paths: list[Path]) -> pa.Table:
    try:
        tables = [pq.read_table(p) for p in paths]
    except Exception as exc:
        raise InputError(
            f"cannot read the score shards ({_first_line(exc)}) — delete the bad shard and run "
            "the same score command again"
        ) from exc
    return pa.concat_tables(tables, promote_options="default")


def _check_ids(store: Store, dataset: str, ids: pa.ChunkedArray, out: Path) -> None:
    """Refuse unless the shards hold each of the dataset's sample ids exactly once."""
    if pc.count_distinct(ids).as_py() != len(ids):
        counts = pc.value_counts(ids)
        twice = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise InputError(f"the shards in {out} hold sample id '{twice}' more than once")
    with store.connect() as con:
        con.register("_shard_ids", pa.table({"sample_id": ids}))
        missing, extra, example = con.execute(
            "WITH d AS (SELECT sample_id FROM samples WHERE dataset = ?), "
            "s AS (SELECT CAST(sample_id AS VARCHAR) AS sample_id FROM _shard_ids) "
            "SELECT (SELECT count(*) FROM d WHERE sample_id NOT IN (SELECT sample_id FROM s)), "
            "(SELECT count(*) FROM s WHERE sample_id NOT IN (SELECT sample_id FROM d)), "
            "(SELECT min(sample_id) FROM s WHERE sample_id NOT IN (SELECT sample_id FROM d))",
            [dataset],
        ).fetchall()[0]
        con.unregister("_shard_ids")
    if missing or extra:
        raise InputError(
            f"the sample ids in {out} do not match dataset '{dataset}': {missing} of its samples "
            f"have no score, {extra} shard ids are not in it"
            + (f" (e.g. '{example}')" if example else "")
            + " — score the same files with the --id-column used to ingest them"
        )


def _add_deferred(store: Store, info, scores: pa.Table, measures: list[Measure]) -> pa.Table:
    """Measures that need corpus-wide statistics, computed here over the dataset's own texts."""
    from core.datasets import read_texts_after
    from core.engine import SampleScore
    from core.measures.base import Batch

    for m in measures:
        m.prepare(store, info)
    model = {}
    if "n_tokens" in scores.column_names:
        model = dict(
            zip(
                scores.column("sample_id").to_pylist(),
                zip(
                    scores.column("n_tokens").to_pylist(),
                    scores.column("bits_total").to_pylist(),
                    strict=True,
                ),
                strict=True,
            )
        )
    values: dict[str, dict] = {m.name: {} for m in measures}
    last = -1
    while rows := read_texts_after(store, info.name, last, 4096):
        last = rows[-1][0]
        texts = [r[2] for r in rows]
        batch = Batch(
            texts=texts,
            n_bytes=[len(t.encode("utf-8")) for t in texts],
            model_scores=[SampleScore(*model[r[1]]) for r in rows] if model else None,
        )
        for m in measures:
            values[m.name].update(zip([r[1] for r in rows], m.compute(batch), strict=True))
    ids = scores.column("sample_id").to_pylist()
    for m in measures:
        col = pa.array([values[m.name][i] for i in ids], pa.float64())
        if m.name in scores.column_names:
            scores = scores.drop_columns([m.name])
        scores = scores.append_column(m.name, col)
    return scores


def _insert_run(store: Store, info, manifest: dict, settings: dict, key: str, scores) -> RunOutcome:
    import uuid

    from core.measures.registry import all_measures

    run_id = "run-" + uuid.uuid4().hex[:8]
    known = set(SCORE_COLUMNS) | {m.name for m in all_measures()}
    cols = ["sample_id"] + [c for c in scores.column_names if c in known]
    scores = scores.select(cols).append_column(
        "run_id", pa.array([run_id] * scores.num_rows, pa.string())
    )
    tokens = int(pc.sum(scores.column("n_tokens")).as_py() or 0) if "n_tokens" in cols else 0
    n_bytes = int(pc.sum(scores.column("n_bytes")).as_py() or 0)
    seconds = float(manifest.get("seconds") or 0)
    with store.transaction() as con:
        change = change_since(con, info.name, info.fingerprint)
        if change:
            raise DatasetChanged(f"{change} while its scores were read — run ingest-scores again")
        con.execute(
            "INSERT INTO runs (run_id, dataset, fingerprint, engine, model, model_hash, settings, "
            "config_key, status, n_total, n_done, tokens_done, bytes_done, bytes_total, "
            "last_row_idx, tokens_per_s, seconds, device, dtype, created_at, started_at, "
            "updated_at, finished_at) VALUES (?, ?, ?, 'ray', ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?, "
            "-1, ?, ?, ?, ?, now(), now(), now(), now())",
            [
                run_id,
                info.name,
                info.fingerprint,
                manifest["model"],
                manifest["model_hash"],
                json.dumps(settings),
                key,
                info.n_samples,
                scores.num_rows,
                tokens,
                n_bytes,
                info.n_bytes,
                tokens / seconds if tokens and seconds else None,
                seconds,
                manifest.get("device"),
                settings.get("dtype"),
            ],
        )
        con.register("_shard_scores", scores)
        names = ", ".join(scores.column_names)
        con.execute(f"INSERT INTO scores ({names}) SELECT {names} FROM _shard_scores")
        con.unregister("_shard_scores")
    return RunOutcome(run_id, "done", reused=False)


# ---- small helpers ---------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _user_error(exc: BaseException) -> BaseException:
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
        return InputError(_first_line(exc))
    return exc
