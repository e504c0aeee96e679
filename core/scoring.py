"""Scoring runs: every sample of a dataset scored into the store, resumable and reusable.

A run is identified by what determines its numbers (dataset fingerprint, weights hash, resolved
settings). Running the same command again reuses a finished run, or resumes an interrupted one
from the last committed chunk: chunks are committed in row order together with the run's
`last_row_idx`, so after a crash — even `kill -9` — no sample is scored twice and none is missed.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from core import jobs
from core.datasets import DatasetChanged, DatasetInfo, change_since, get_dataset, read_texts_after
from core.errors import InputError
from core.jobs import CancelToken
from core.measures.base import Batch
from core.measures.registry import all_measures
from core.store import SCORE_COLUMNS, Store

TARGET_CHUNK_SECONDS = 3.0  # how often results are committed (and progress updated)


@dataclass
class ScoreOptions:
    model: str
    device: str = "auto"
    dtype: str = "auto"
    window: int | None = None
    stride: int | None = None
    max_batch_tokens: int = 8192
    limit: int | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    compile: bool = False

    def argv(self) -> list[str]:
        """The same options as `infoprune score` flags, for starting a background job."""
        out = ["--model", self.model, "--device", self.device, "--dtype", self.dtype]
        for flag, val in (
            ("--window", self.window),
            ("--stride", self.stride),
            ("--limit", self.limit),
        ):
            if val is not None:
                out += [flag, str(val)]
        out += ["--max-batch-tokens", str(self.max_batch_tokens)]
        if self.trust_remote_code:
            out.append("--trust-remote-code")
        if self.allow_pickle:
            out.append("--allow-pickle")
        if self.compile:
            out.append("--compile")
        return out


@dataclass
class Progress:
    n_done: int
    n_total: int
    tokens_per_s: float | None
    bytes_per_s: float | None
    eta_s: float | None


@dataclass
class RunOutcome:
    run_id: str
    status: str
    reused: bool


def validate_options(opts: ScoreOptions) -> None:
    for name in ("window", "stride", "limit", "max_batch_tokens"):
        val = getattr(opts, name)
        if val is not None and val < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a positive number")
    if opts.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise InputError(f"unknown dtype '{opts.dtype}' — use auto, float32, bfloat16 or float16")


def is_model_free(model: str) -> bool:
    return model.strip().lower() == "none"


def score_dataset(
    store: Store,
    dataset: str,
    opts: ScoreOptions,
    cancel: CancelToken | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunOutcome:
    """Score DATASET with OPTS into the store; returns the run (reused, resumed or new)."""
    cancel = cancel or CancelToken()
    validate_options(opts)
    info = get_dataset(store, dataset)
    if not is_model_free(opts.model):
        from core.models import check_device

        check_device(opts.device)
    scorer, model_hash, settings = _prepare_model(opts)
    measures = [m for m in all_measures() if scorer is not None or not m.needs_model]
    settings["measures"] = [m.name for m in measures]
    settings["limit"] = opts.limit
    key = config_key(info.fingerprint, model_hash, settings)

    run_id, status, last_row = claim_run(store, info, opts, model_hash, settings, key)
    if status == "done":
        return RunOutcome(run_id, "done", reused=True)
    try:
        if scorer is not None:
            record_probe_samples(store, opts.model, model_hash, info)
        for m in measures:
            m.prepare(store, info)
        status = _score_chunks(
            store, run_id, info, scorer, measures, last_row, opts.limit, cancel, on_progress
        )
    except BaseException as exc:
        error = str(exc).splitlines()[0] if str(exc) else repr(exc)
        finish_run(store, run_id, "failed", error, afresh=isinstance(exc, DatasetChanged))
        raise
    if status == "done":
        complete_run(store, run_id)
    else:
        finish_run(store, run_id, status)
    return RunOutcome(run_id, status, reused=False)


def _prepare_model(opts: ScoreOptions):
    """Load and check everything that can fail before any work is done."""
    if is_model_free(opts.model):
        return None, None, {"engine": "none"}
    from core.engine import EngineSettings, Scorer
    from core.models import load_model

    lm = load_model(opts.model, opts.allow_pickle, opts.trust_remote_code)
    scorer = Scorer(
        lm.model,
        lm.tokenizer,
        EngineSettings(
            window=opts.window,
            stride=opts.stride,
            max_batch_tokens=opts.max_batch_tokens,
            dtype=opts.dtype,
            device=opts.device,
            compile=opts.compile,
        ),
    )
    settings = {
        "engine": "local",
        "window": scorer.window,
        "stride": scorer.stride,
        "dtype": scorer.dtype,
    }
    scorer.model_dir = lm.local_dir
    return scorer, lm.model_hash, settings


def config_key(fingerprint: str, model_hash: str | None, settings: dict) -> str:
    """What identifies a run's numbers: the dataset, the weights and the resolved settings."""
    return hashlib.sha256(
        json.dumps([fingerprint, model_hash, settings], sort_keys=True).encode()
    ).hexdigest()[:24]


def claim_run(store, info: DatasetInfo, opts, model_hash, settings, config_key, device=None):
    """Find the run with this configuration (reuse/resume it) or create one; mark it ours.

    DEVICE labels the run when the scoring happens elsewhere (Ray workers), not on this machine.
    """
    with store.transaction() as con:
        rows = con.execute(
            "SELECT run_id, status, last_row_idx FROM runs WHERE config_key = ? "
            "ORDER BY created_at DESC LIMIT 1",
            [config_key],
        ).fetchall()
        if rows:
            run_id, status, last_row = rows[0]
            if status == "done":
                return run_id, "done", last_row
            jobs.claim(con, jobs.RUNS, run_id)
            return run_id, "running", last_row
        me = jobs.owner()
        n_total, bytes_total = con.execute(
            "SELECT count(*), coalesce(sum(n_bytes), 0) FROM (SELECT n_bytes FROM samples "
            "WHERE dataset = ? ORDER BY row_idx LIMIT ?)",
            [info.name, opts.limit or info.n_samples],
        ).fetchall()[0]
        run_id = "run-" + uuid.uuid4().hex[:8]
        con.execute(
            "INSERT INTO runs (run_id, dataset, fingerprint, engine, model, model_hash, settings, "
            "config_key, status, n_total, n_done, tokens_done, bytes_done, bytes_total, "
            "last_row_idx, seconds, device, dtype, pid, pid_start, created_at, started_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, 0, 0, 0, ?, -1, 0, ?, ?, "
            "?, ?, now(), now(), now())",
            [
                run_id,
                info.name,
                info.fingerprint,
                settings["engine"],
                opts.model,
                model_hash,
                json.dumps(settings),
                config_key,
                n_total,
                bytes_total,
                device or _device_label(opts),
                settings.get("dtype"),
                me.pid,
                me.start,
            ],
        )
        return run_id, "running", -1


def _device_label(opts: ScoreOptions) -> str:
    if is_model_free(opts.model):
        return "cpu"
    from core.engine import _resolve_device

    return _resolve_device(opts.device)


def record_probe_samples(store: Store, model: str, model_hash: str, info: DatasetInfo) -> None:
    """If the model is a probe trained on this very dataset, remember which samples trained it."""
    from core.models import read_probe_card, resolve_model_dir

    card = read_probe_card(resolve_model_dir(model))
    if not card or card.get("fingerprint") != info.fingerprint:
        return
    directory = resolve_model_dir(model)
    with store.transaction() as con:
        if con.execute(
            "SELECT 1 FROM probe_samples WHERE model_hash = ? AND fingerprint = ? LIMIT 1",
            [model_hash, info.fingerprint],
        ).fetchall():
            return
        for role in ("train", "val"):
            ids = card.get(f"{role}_ids")
            if isinstance(ids, str):
                ids = (directory / ids).read_text().splitlines()
            if not ids:
                continue
            tbl = pa.table(
                {
                    "model_hash": [model_hash] * len(ids),
                    "fingerprint": [info.fingerprint] * len(ids),
                    "sample_id": [str(i) for i in ids],
                    "role": [role] * len(ids),
                }
            )
            con.register("_probe_ids", tbl)
            con.execute("INSERT INTO probe_samples SELECT * FROM _probe_ids")
            con.unregister("_probe_ids")


def _score_chunks(store, run_id, info, scorer, measures, last_row, limit, cancel, on_progress):
    n_total, n_done, tokens_done, bytes_done, bytes_total, seconds = store.query(
        "SELECT n_total, n_done, tokens_done, bytes_done, bytes_total, seconds FROM runs "
        "WHERE run_id = ?",
        [run_id],
    )[0]
    # Small first chunks show progress soon; model-free chunks are cheap, so start large.
    first_rows = 16 if scorer is not None else 2048
    state = {"rows": first_rows, "last_row": last_row, "remaining": n_total - n_done}

    def chunks() -> Iterator[list[tuple[int, str, str]]]:
        while state["remaining"] > 0 and not cancel.cancelled:
            take = min(state["rows"], state["remaining"])
            rows = read_texts_after(store, info.name, state["last_row"], take)
            if not rows:
                return
            state["last_row"] = rows[-1][0]
            state["remaining"] -= len(rows)
            yield rows

    session_start = time.monotonic()
    chunk_start = time.monotonic()
    for rows, model_scores in _scored(scorer, chunks()):
        texts = [r[2] for r in rows]
        n_bytes = [len(t.encode("utf-8")) for t in texts]
        table = score_table(run_id, rows, n_bytes, model_scores, measures)
        tokens = sum(s.n_tokens for s in model_scores) if model_scores else 0
        elapsed = time.monotonic() - chunk_start
        n_done += len(rows)
        tokens_done += tokens
        bytes_done += sum(n_bytes)
        total_seconds = seconds + (time.monotonic() - session_start)
        with store.transaction() as con:
            change = change_since(con, info.name, info.fingerprint)
            if change:
                raise DatasetChanged(
                    f"run {run_id} stopped: {change} while it was being scored — "
                    "run the same command to score it afresh"
                )
            con.register("_chunk_scores", table)
            con.execute(
                f"INSERT INTO scores ({', '.join(table.column_names)}) SELECT * FROM _chunk_scores"
            )
            con.unregister("_chunk_scores")
            con.execute(
                "UPDATE runs SET n_done = ?, tokens_done = ?, bytes_done = ?, last_row_idx = ?, "
                "seconds = ?, tokens_per_s = ?, updated_at = now() WHERE run_id = ?",
                [
                    n_done,
                    tokens_done,
                    bytes_done,
                    rows[-1][0],
                    total_seconds,
                    tokens_done / total_seconds if scorer is not None and total_seconds else None,
                    run_id,
                ],
            )
        if on_progress:
            rate = bytes_done / total_seconds if total_seconds else None
            on_progress(
                Progress(
                    n_done=n_done,
                    n_total=n_total,
                    tokens_per_s=tokens_done / total_seconds if scorer and total_seconds else None,
                    bytes_per_s=rate,
                    eta_s=(bytes_total - bytes_done) / rate if rate else None,
                )
            )
        # Size the next chunks so a commit happens every few seconds whatever the speed.
        scale = TARGET_CHUNK_SECONDS / max(elapsed, 1e-3)
        state["rows"] = int(min(max(state["rows"] * min(max(scale, 0.5), 2.0), 16), 16384))
        chunk_start = time.monotonic()
    return "cancelled" if cancel.cancelled and n_done < n_total else "done"


def _scored(scorer, chunks: Iterator[list]) -> Iterator[tuple[list, list | None]]:
    """Pairs each chunk with its model scores, tokenising ahead while the model computes."""
    if scorer is None:
        for rows in chunks:
            yield rows, None
        return
    pending: list[list] = []

    def texts_of_chunks():
        for rows in chunks:
            pending.append(rows)
            yield [r[2] for r in rows]

    for model_scores in scorer.score_stream(texts_of_chunks()):
        yield pending.pop(0), model_scores


def score_table(run_id, rows, n_bytes, model_scores, measures) -> pa.Table:
    texts = [r[2] for r in rows]
    cols: dict[str, list] = {
        "run_id": [run_id] * len(rows),
        "sample_id": [r[1] for r in rows],
        "n_bytes": n_bytes,
    }
    if model_scores is not None:
        cols["n_tokens"] = [s.n_tokens for s in model_scores]
        cols["bits_total"] = [s.bits_total for s in model_scores]
        cols["bits_per_token"] = [
            s.bits_total / s.n_tokens if s.n_tokens else None for s in model_scores
        ]
        cols["bits_per_byte"] = [
            s.bits_total / b if b else None for s, b in zip(model_scores, n_bytes, strict=True)
        ]
    batch = Batch(texts=texts, n_bytes=n_bytes, model_scores=model_scores)
    for m in measures:
        cols[m.name] = m.compute(batch)
    types = {c: pa.float64() for c in cols if c not in ("run_id", "sample_id")}
    types.update({"run_id": pa.string(), "sample_id": pa.string(), "n_bytes": pa.int64()})
    if "n_tokens" in cols:
        types["n_tokens"] = pa.int64()
    return pa.table({c: pa.array(v, type=types[c]) for c, v in cols.items()})


def complete_run(store: Store, run_id: str) -> None:
    """Mark RUN done, but only if every sample of its dataset, as fingerprinted when the run
    started, has a score. Otherwise the run fails, its partial scores go (the next `score` starts
    afresh) and DatasetChanged says why: a run is never `done` with samples missing."""
    with store.transaction() as con:
        dataset, fingerprint, n_total = con.execute(
            "SELECT dataset, fingerprint, n_total FROM runs WHERE run_id = ?", [run_id]
        ).fetchall()[0]
        n_rows, n_ids = con.execute(
            "SELECT count(*), count(DISTINCT sample_id) FROM scores WHERE run_id = ?", [run_id]
        ).fetchall()[0]
        problem = change_since(con, dataset, fingerprint)
        if problem is None and not n_rows == n_ids == n_total:
            problem = f"{n_ids:,} of {n_total:,} samples have a score"
        if problem is None:
            jobs.finish(con, jobs.RUNS, run_id, "done")
            return
    error = f"run {run_id} is incomplete: {problem} — run the same command to score it afresh"
    finish_run(store, run_id, "failed", error, afresh=True)
    raise DatasetChanged(error)


def finish_run(
    store: Store, run_id: str, status: str, error: str | None = None, afresh: bool = False
) -> None:
    """Record how RUN ended; AFRESH also drops its partial scores, so a resume starts over."""
    with store.transaction() as con:
        if afresh:
            con.execute("DELETE FROM scores WHERE run_id = ?", [run_id])
            con.execute(
                "UPDATE runs SET n_done = 0, tokens_done = 0, bytes_done = 0, last_row_idx = -1, "
                "seconds = 0, tokens_per_s = NULL WHERE run_id = ?",
                [run_id],
            )
        jobs.finish(con, jobs.RUNS, run_id, status, error)


# ---- what the UI and CLI read ---------------------------------------------------------------


def list_runs(store: Store, dataset: str | None = None):
    """Runs newest first, with live status: a 'running' run whose process is gone is 'stopped'."""
    df = store.query_df(
        "SELECT run_id, dataset, model, status, n_done, n_total, tokens_per_s, seconds, device, "
        "dtype, settings, model_hash, pid, pid_start, error, created_at, finished_at, "
        "CASE WHEN bytes_done > 0 AND bytes_total > bytes_done "
        "THEN seconds * (bytes_total - bytes_done) / bytes_done END AS eta_s FROM runs "
        + ("WHERE dataset = ? " if dataset else "")
        + "ORDER BY created_at DESC",
        [dataset] if dataset else [],
    )
    jobs.with_live_status(df, jobs.RUNS)
    return df


def get_run(store: Store, run_id: str) -> dict:
    df = store.query_df("SELECT * FROM runs WHERE run_id = ?", [run_id])
    if df.empty:
        known = [r[0] for r in store.query("SELECT run_id FROM runs ORDER BY created_at DESC")]
        hint = f"runs are: {', '.join(known[:10])}" if known else "no runs yet"
        raise InputError(f"unknown run '{run_id}' ({hint})")
    row = df.iloc[0].to_dict()
    row["settings"] = json.loads(row["settings"])
    row["status"] = jobs.live_status(row["status"], row["pid"], row["pid_start"])
    return row


def run_score_columns(store: Store, run_id: str) -> list[str]:
    """Score columns that hold values in this run (model-free runs have no bits_*)."""
    cols = SCORE_COLUMNS + [m.name for m in all_measures()]
    present = store.query(
        "SELECT " + ", ".join(f"count({c})" for c in cols) + " FROM scores WHERE run_id = ?",
        [run_id],
    )[0]
    return [c for c, n in zip(cols, present, strict=True) if n]


def start_score_job(store: Store, dataset: str, opts: ScoreOptions) -> str:
    """Start `infoprune score` in the background (the UI's Start button)."""
    validate_options(opts)
    get_dataset(store, dataset)
    argv = ["score", "--dataset", dataset, *opts.argv()]
    return jobs.start_job(store, "score", argv, ref=dataset)


def cancel_run(store: Store, run_id: str) -> bool:
    """Ask the process scoring RUN to stop after its current chunk."""
    return jobs.cancel(store, jobs.RUNS, run_id)
