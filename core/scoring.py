"""Scoring runs: every sample of a dataset scored into the store, resumable and reusable.

A run is identified by what determines its numbers (dataset fingerprint, weights hash, resolved
settings). Running the same command again reuses a finished run, or resumes an interrupted one
from the last committed chunk: chunks are committed in row order together with the run's
`last_row_idx`, so after a crash — even `kill -9` — no sample is scored twice and none is missed.
Both drivers, this module's local loop and core/ray_engine/, go through `run_scoring` (the run's
lifecycle) and `RunWriter` (its commits); a batch is scored by core/batch_scorer.py.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import jobs
from core.batch_scorer import BatchScorer
from core.corpus import CorpusStats, load_corpus_for
from core.datasets import (
    DatasetChanged,
    DatasetInfo,
    change_since,
    get_dataset,
    read_texts_after,
    record_training_samples,
)
from core.devices import resolve_device
from core.duplicates import (
    SignChunks,
    ensure_duplicates,
    prepare_duplicates,
    sign_locally,
    write_duplicates,
)
from core.errors import InputError, first_line
from core.jobs import CancelToken
from core.measures.base import Measure
from core.measures.registry import all_measures
from core.score_options import ScoreOptions, validate_options
from core.scores import table_columns
from core.store import Store

TARGET_CHUNK_SECONDS = 3.0  # how often results are committed (and progress updated)


@dataclass
class Progress:
    n_done: int
    n_total: int
    tokens_per_s: float | None
    eta_s: float | None


@dataclass
class RunOutcome:
    run_id: str
    status: str
    reused: bool


@dataclass(frozen=True)
class RunSpec:
    """What a run is: its dataset as fingerprinted, the model, and the resolved settings (engine,
    window, stride, dtype, measures, limit); DEVICE only labels it."""

    info: DatasetInfo
    model: str
    model_hash: str | None
    settings: dict
    device: str

    @property
    def key(self) -> str:
        return config_key(self.info.fingerprint, self.model_hash, self.settings)


@dataclass(frozen=True)
class RunTotals:
    """The counters of a run that is written already done (attached score shards)."""

    n_done: int
    tokens_done: int
    bytes_done: int
    seconds: float


def measures_for(has_model: bool) -> list[Measure]:
    """The measures a run computes: without a model, those that need none."""
    return [m for m in all_measures() if has_model or not m.needs_model]


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
    if not opts.model_free:
        resolve_device(opts.device)  # a device this machine lacks, refused before any loading
        jobs.set_phase(store, "loading the model")
    measures = measures_for(not opts.model_free)
    step = BatchScorer(opts, measures)
    engine = {"engine": "none"} if opts.model_free else {"engine": "local", **step.settings}
    settings = {**engine, "measures": [m.name for m in measures], "limit": opts.limit}
    spec = RunSpec(info, opts.model, step.model_hash, settings, step.device)

    def score(run_id: str, last_row: int) -> str:
        if any(m.needs_corpus for m in measures):
            jobs.set_phase(store, "counting the corpus's words")
        corpus = load_corpus_for(store, info, measures)
        first = "planning windows and scoring the first samples" if step.scorer else "scoring"
        jobs.set_phase(store, first)
        writer = RunWriter(store, run_id, info, step.scorer is not None, on_progress)
        return _score_rows(store, writer, step, corpus, last_row, cancel)

    return run_scoring(store, spec, opts.limit, score)


def run_scoring(
    store: Store,
    spec: RunSpec,
    limit: int | None,
    score: Callable[[str, int], str],
    sign: SignChunks = sign_locally,
) -> RunOutcome:
    """A run's lifecycle, the same for every driver: reuse the done run or claim one, then
    SCORE(run_id, last committed row) -> 'done' | 'cancelled'. The run is done only when complete,
    duplicates counted (SIGN: the driver's signature step); a failure is recorded, and a changed
    dataset clears the run so the next `score` starts over."""
    run_id, status, last_row = claim_run(store, spec, limit)
    if status == "done":
        ensure_duplicates(store, run_id, sign)  # a run done before duplicates were counted
        return RunOutcome(run_id, "done", reused=True)
    try:
        if spec.model_hash is not None:
            record_probe_samples(store, spec.model, spec.model_hash, spec.info)
        status = score(run_id, last_row)
    except BaseException as exc:
        error = str(exc).splitlines()[0] if str(exc) else repr(exc)
        finish_run(store, run_id, "failed", error, afresh=isinstance(exc, DatasetChanged))
        raise
    if status == "done":
        complete_run(store, run_id, sign)
    else:
        finish_run(store, run_id, status)
    return RunOutcome(run_id, status, reused=False)


def config_key(fingerprint: str, model_hash: str | None, settings: dict) -> str:
    """What identifies a run's numbers: the dataset, the weights and the resolved settings."""
    return hashlib.sha256(
        json.dumps([fingerprint, model_hash, settings], sort_keys=True).encode()
    ).hexdigest()[:24]


def claim_run(store: Store, spec: RunSpec, limit: int | None) -> tuple[str, str, int]:
    """Find the run of SPEC (reuse or resume it) or create one: (run_id, status, last row).

    Only a run of the same dataset NAME is reused: another dataset with the same content has
    runs of its own (they show under its name, and outlive the other's deletion)."""
    with store.transaction() as con:
        rows = con.execute(
            "SELECT run_id, status, last_row_idx FROM runs WHERE config_key = ? AND dataset = ? "
            "ORDER BY created_at DESC LIMIT 1",
            [spec.key, spec.info.name],
        ).fetchall()
        if rows:
            run_id, status, last_row = rows[0]
            if status == "done":
                return run_id, "done", last_row
            jobs.claim(con, jobs.RUNS, run_id)
            return run_id, "running", last_row
        n_total, bytes_total = con.execute(
            "SELECT count(*), coalesce(sum(n_bytes), 0) FROM (SELECT n_bytes FROM samples "
            "WHERE dataset = ? ORDER BY row_idx LIMIT ?)",
            [spec.info.name, limit or spec.info.n_samples],
        ).fetchall()[0]
        return insert_run(con, spec, n_total, bytes_total), "running", -1


def insert_run(
    con, spec: RunSpec, n_total: int, bytes_total: int, done: RunTotals | None = None
) -> str:
    """The one INSERT into `runs`: a running run owned by this process, or one already DONE."""
    run_id = "run-" + uuid.uuid4().hex[:8]
    me = None if done else jobs.owner()
    totals = done or RunTotals(0, 0, 0, 0.0)
    tokens_per_s = (
        totals.tokens_done / totals.seconds if totals.tokens_done and totals.seconds else None
    )
    con.execute(
        "INSERT INTO runs (run_id, dataset, fingerprint, engine, model, model_hash, settings, "
        "config_key, status, n_total, n_done, tokens_done, bytes_done, bytes_total, "
        "last_row_idx, tokens_per_s, seconds, device, dtype, pid, pid_start, created_at, "
        "started_at, updated_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "-1, ?, ?, ?, ?, ?, ?, now(), now(), now(), CASE WHEN ? THEN now() END)",
        [
            run_id,
            spec.info.name,
            spec.info.fingerprint,
            spec.settings["engine"],
            spec.model,
            spec.model_hash,
            json.dumps(spec.settings),
            spec.key,
            "done" if done else "running",
            n_total,
            totals.n_done,
            totals.tokens_done,
            totals.bytes_done,
            bytes_total,
            tokens_per_s,
            totals.seconds,
            spec.device,
            spec.settings.get("dtype"),
            me.pid if me else None,
            me.start if me else None,
            done is not None,
        ],
    )
    return run_id


def record_probe_samples(store: Store, model: str, model_hash: str, info: DatasetInfo) -> None:
    """If the model is a probe trained on this very dataset, remember which samples trained it."""
    from core.models import read_probe_card, resolve_model_dir

    card = read_probe_card(resolve_model_dir(model))
    if not card or card.get("fingerprint") != info.fingerprint:
        return
    directory = resolve_model_dir(model)
    ids_by_role = {}
    for role in ("train", "val"):
        ids = card.get(f"{role}_ids")
        if isinstance(ids, str):  # a file beside the card
            ids = (directory / ids).read_text().splitlines()
        ids_by_role[role] = ids or []
    record_training_samples(store, model_hash, info.fingerprint, ids_by_role)


def _score_rows(
    store: Store,
    writer: RunWriter,
    step: BatchScorer,
    corpus: CorpusStats | None,
    last_row: int,
    cancel: CancelToken,
) -> str:
    """The local driver: chunks read in row order, sized so a commit comes every few seconds."""
    # Small first chunks show progress soon; model-free chunks are cheap, so start large.
    first_rows = 16 if step.scorer is not None else 2048
    state = {"rows": first_rows, "last_row": last_row, "remaining": writer.n_total - writer.n_done}

    def chunks() -> Iterator[tuple[list[tuple[int, str, str]], list[str]]]:
        while state["remaining"] > 0 and not cancel.cancelled:
            take = min(state["rows"], state["remaining"])
            rows = read_texts_after(store, writer.info.name, state["last_row"], take)
            if not rows:
                return
            state["last_row"] = rows[-1][0]
            state["remaining"] -= len(rows)
            yield rows, [r[2] for r in rows]

    chunk_start = time.monotonic()
    for rows, scores in step.score_stream(chunks(), corpus):
        elapsed = time.monotonic() - chunk_start
        ids = pa.array([r[1] for r in rows], pa.string())
        writer.commit(scores.add_column(0, "sample_id", ids), last_row_idx=rows[-1][0])
        # Size the next chunks so a commit happens every few seconds whatever the speed.
        scale = TARGET_CHUNK_SECONDS / max(elapsed, 1e-3)
        state["rows"] = int(min(max(state["rows"] * min(max(scale, 0.5), 2.0), 16), 16384))
        chunk_start = time.monotonic()
    return writer.outcome(cancel.cancelled)


class RunWriter:
    """The one writer of a running run's scores, for every driver.

    Each chunk goes into `scores` with the run's counters in one transaction that first checks the
    dataset is still the one the run started on; then progress is reported.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        info: DatasetInfo,
        has_model: bool,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.store, self.run_id, self.info = store, run_id, info
        self.has_model, self.on_progress = has_model, on_progress
        (
            self.n_total,
            self.n_done,
            self.tokens_done,
            self.bytes_done,
            self.bytes_total,
            self._seconds_before,
        ) = store.query(
            "SELECT n_total, n_done, tokens_done, bytes_done, bytes_total, seconds FROM runs "
            "WHERE run_id = ?",
            [run_id],
        )[0]
        self._start = time.monotonic()

    def commit(self, scores: pa.Table, last_row_idx: int | None = None) -> None:
        """Add SCORES (sample_id and score columns) to the run. LAST_ROW_IDX, for a driver that
        reads in row order, is where a resume reads on from."""
        n_done = self.n_done + scores.num_rows
        bytes_done = self.bytes_done + (pc.sum(scores.column("n_bytes")).as_py() or 0)
        tokens_done = self.tokens_done
        if "n_tokens" in scores.column_names:
            tokens_done += pc.sum(scores.column("n_tokens")).as_py() or 0
        seconds = self._seconds_before + (time.monotonic() - self._start)
        tokens_per_s = tokens_done / seconds if self.has_model and seconds else None
        resume = "" if last_row_idx is None else ", last_row_idx = ?"
        with self.store.transaction() as con:
            change = change_since(con, self.info.name, self.info.fingerprint)
            if change:
                raise DatasetChanged(
                    f"run {self.run_id} stopped: {change} while it was being scored — "
                    "run the same command to score it afresh"
                )
            insert_scores(con, self.run_id, scores)
            con.execute(
                "UPDATE runs SET n_done = ?, tokens_done = ?, bytes_done = ?, seconds = ?, "
                f"tokens_per_s = ?, updated_at = now(){resume} WHERE run_id = ?",
                [n_done, tokens_done, bytes_done, seconds, tokens_per_s]
                + ([] if last_row_idx is None else [last_row_idx])
                + [self.run_id],
            )
        self.n_done, self.tokens_done, self.bytes_done = n_done, tokens_done, bytes_done
        if self.on_progress:
            rate = bytes_done / seconds if seconds else None
            self.on_progress(
                Progress(
                    n_done=n_done,
                    n_total=self.n_total,
                    tokens_per_s=tokens_per_s,
                    eta_s=(self.bytes_total - bytes_done) / rate if rate else None,
                )
            )

    def outcome(self, cancelled: bool) -> str:
        """How the scoring ended: cancelled only if samples are left."""
        return "cancelled" if cancelled and self.n_done < self.n_total else "done"


def insert_scores(con, run_id: str, scores: pa.Table) -> None:
    """SCORES (sample_id and score columns) into `scores` as RUN_ID's, inside the caller's
    transaction, the one that also updates the run's row."""
    table = scores.append_column("run_id", pa.array([run_id] * scores.num_rows, pa.string()))
    con.register("_run_scores", table)
    cols = ", ".join(table.column_names)
    con.execute(f"INSERT INTO scores ({cols}) SELECT {cols} FROM _run_scores")
    con.unregister("_run_scores")


def complete_run(store: Store, run_id: str, sign: SignChunks = sign_locally) -> None:
    """Mark RUN done, but only if every sample of its dataset, as fingerprinted when the run
    started, has a score. Otherwise the run fails, its partial scores go (the next `score` starts
    afresh) and DatasetChanged says why: a run is never `done` with samples missing. The
    dataset's duplicate counts (core/duplicates.py) are written in the same transaction."""
    dataset, fingerprint = store.query(
        "SELECT dataset, fingerprint FROM runs WHERE run_id = ?", [run_id]
    )[0]
    jobs.set_phase(store, "finding duplicates")
    try:
        duplicates = prepare_duplicates(store, dataset, fingerprint, sign)
    except BaseException as exc:  # scores stay: the same command resumes into this pass
        finish_run(store, run_id, "failed", f"counting duplicates failed: {first_line(exc)}")
        raise
    with store.transaction() as con:
        n_total, n_rows, n_ids = con.execute(
            "SELECT (SELECT n_total FROM runs WHERE run_id = ?), count(*), "
            "count(DISTINCT sample_id) FROM scores WHERE run_id = ?",
            [run_id, run_id],
        ).fetchall()[0]
        problem = change_since(con, dataset, fingerprint)
        if problem is None and not n_rows == n_ids == n_total:
            problem = f"{n_ids:,} of {n_total:,} samples have a score"
        if problem is None and (missing := write_duplicates(con, run_id, duplicates)):
            problem = f"{missing:,} samples are not in the dataset's duplicate counts"
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
            con.execute("DELETE FROM dup_clusters WHERE run_id = ?", [run_id])
            con.execute(
                "UPDATE runs SET n_done = 0, tokens_done = 0, bytes_done = 0, last_row_idx = -1, "
                "seconds = 0, tokens_per_s = NULL WHERE run_id = ?",
                [run_id],
            )
        jobs.finish(con, jobs.RUNS, run_id, status, error)


# ---- what the UI and CLI read ---------------------------------------------------------------


def list_runs(store: Store, dataset: str | None = None):
    """Runs newest first, with live status: a 'running' run whose process is gone is 'stopped'.
    `dataset_current`: the run's dataset still holds what it scored (not deleted or replaced
    since), so its samples can be shown, pruned and exported."""
    df = store.query_df(
        "SELECT r.run_id, r.dataset, r.model, r.status, r.n_done, r.n_total, r.tokens_per_s, "
        "r.seconds, r.device, r.dtype, r.settings, r.model_hash, r.pid, r.pid_start, r.error, "
        "r.created_at, r.started_at, r.finished_at, "
        "CASE WHEN r.bytes_done > 0 AND r.bytes_total > r.bytes_done "
        "THEN r.seconds * (r.bytes_total - r.bytes_done) / r.bytes_done END AS eta_s, "
        "coalesce(d.fingerprint = r.fingerprint, false) AS dataset_current "
        "FROM runs r LEFT JOIN datasets d ON d.name = r.dataset "
        + ("WHERE r.dataset = ? " if dataset else "")
        + "ORDER BY r.created_at DESC",
        [dataset] if dataset else [],
    )
    jobs.with_live_status(df, jobs.RUNS)
    return df


def latest_model_run(store: Store, dataset: str) -> str | None:
    """DATASET's most recently finished run with a model, if any."""
    found = store.query(
        "SELECT run_id FROM runs WHERE dataset = ? AND status = 'done' AND model <> 'none' "
        "ORDER BY finished_at DESC LIMIT 1",
        [dataset],
    )
    return found[0][0] if found else None


def token_counts(store: Store, run_id: str) -> np.ndarray:
    """The tokens each sample of a run predicts: what a choice of window and stride will cost
    is computed from them (core/windows.py)."""
    with store.connect() as con:
        counts = con.execute(
            "SELECT n_tokens FROM scores WHERE run_id = ? AND n_tokens > 0", [run_id]
        ).fetchnumpy()["n_tokens"]
    return np.asarray(counts, dtype=np.int64)


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
    cols = table_columns()
    present = store.query(
        "SELECT " + ", ".join(f"count({c})" for c in cols) + " FROM scores WHERE run_id = ?",
        [run_id],
    )[0]
    return [c for c, n in zip(cols, present, strict=True) if n]


def start_score_job(store: Store, dataset: str, opts: ScoreOptions) -> str:
    """Start `infoprune score` in the background (the UI's Start button), once what can be checked
    without loading anything is right: the options, the dataset, a local model's files."""
    from core.devices import resolve_device_and_dtype
    from core.models import check_model

    validate_options(opts)
    get_dataset(store, dataset)
    if not opts.model_free:
        if opts.device not in ("auto", "cpu"):  # a GPU this machine lacks: said now, not by the job
            resolve_device_and_dtype(opts.device, opts.dtype)
        check_model(opts.model, opts.allow_pickle, opts.trust_remote_code)
    argv = ["score", "--dataset", dataset, *opts.argv()]
    return jobs.start_job(store, "score", argv, ref=dataset)


def run_of_job(store: Store, job_id: str) -> str | None:
    """The run a finished score job scored or reused (the last line it printed), else None."""
    job = jobs.get_job(store, job_id)
    if job["status"] != "done":
        return None
    last = jobs.read_log_tail(job["log_path"], 1).strip()
    return last if last.startswith("run-") else None


def resume_options(run: dict) -> ScoreOptions:
    """The options that claim RUN (a row of `get_run`) again: its model and resolved settings,
    so the same configuration key finds it and scoring goes on from its last committed row."""
    settings = run["settings"]
    if settings.get("engine") not in ("local", "none"):
        raise InputError(
            f"run {run['run_id']} was scored on {settings.get('engine')} — resume it with the "
            "`infoprune score` command that started it"
        )
    if settings["engine"] == "none":
        return ScoreOptions(model="none", limit=settings.get("limit"))
    return ScoreOptions(
        model=run["model"],
        device=run["device"] or "auto",
        dtype=settings["dtype"],
        window=settings["window"],
        stride=settings["stride"],
        limit=settings.get("limit"),
    )


def resume_score_job(store: Store, run_id: str) -> str:
    """Start a stopped, cancelled or failed run again in the background (the UI's Resume)."""
    run = get_run(store, run_id)
    return start_score_job(store, run["dataset"], resume_options(run))


def cancel_run(store: Store, run_id: str) -> bool:
    """Ask the process scoring RUN to stop after its current chunk."""
    return jobs.cancel(store, jobs.RUNS, run_id)
