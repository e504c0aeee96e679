"""Background jobs: long work (scoring, probe training, validation) runs as its own process.

The UI starts `infoprune <command> ...` detached from its own process group, so a browser reload or
a Streamlit rerun never stops it; the job records its pid in the store. Cancelling is a SIGTERM that
the job turns into a clean stop after its current batch (see `CancelToken`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core import processes
from core.config import jobs_dir
from core.errors import InputError
from core.store import Store

if TYPE_CHECKING:  # pandas only for the UI's tables: the scoring loop starts sooner
    import pandas as pd


class CancelToken:
    """Set when the process gets SIGTERM/SIGINT; long loops check it between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        self._event.set()

    def install(self) -> CancelToken:
        """Route SIGTERM and SIGINT to this token (main thread only; a no-op elsewhere)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._event.set())
        return self


def start_job(store: Store, kind: str, argv: list[str], ref: str | None = None) -> str:
    """Start `infoprune ARGV --db STORE` in the background and return its job id.

    The job's row records the process (pid and start time); the process itself writes how it
    ended (`finish_job`), and a row still `running` whose process is gone reads as `stopped`.
    """
    job_id = f"{kind}-{uuid.uuid4().hex[:8]}"
    log_dir = jobs_dir(store.path)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{job_id}.log"
    cmd = [sys.executable, "-m", "core.cli", *argv, "--db", str(store.path)]
    env = dict(os.environ, INFOPRUNE_JOB_ID=job_id, PYTHONUNBUFFERED="1")
    # The row exists before the process does, so that a job that ends at once can record it.
    with store.transaction() as con:
        con.execute(
            "INSERT INTO jobs (job_id, kind, ref, argv, status, log_path, created_at) "
            "VALUES (?, ?, ?, ?, 'running', ?, now())",
            [job_id, kind, ref, json.dumps(argv), str(log_path)],
        )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(Path(__file__).resolve().parent.parent),
            env=env,
        )
    with store.transaction() as con:
        con.execute(
            "UPDATE jobs SET pid = ?, pid_start = ? WHERE job_id = ?",
            [proc.pid, _child_start(proc), job_id],
        )
    return job_id


def _child_start(proc: subprocess.Popen) -> int | None:
    """The child's start time; a child that already exited has none, so it reads as ended."""
    return processes.start_time(proc.pid) if proc.poll() is None else None


def finish_job(store: Store, status: str, message: str | None = None) -> None:
    """Record how this process's background job ended (a no-op outside a background job)."""
    job_id = os.environ.get("INFOPRUNE_JOB_ID")
    if not job_id:
        return
    with store.transaction() as con:
        con.execute(
            "UPDATE jobs SET status = ?, message = ?, finished_at = now() WHERE job_id = ?",
            [status, message, job_id],
        )


def set_phase(store: Store, phase: str) -> None:
    """Say what this process's background job is doing now ("loading the model"), for the pages
    to show before its progress counts anything (a no-op outside a background job)."""
    job_id = os.environ.get("INFOPRUNE_JOB_ID")
    if not job_id:
        return
    with store.transaction() as con:
        con.execute("UPDATE jobs SET phase = ? WHERE job_id = ?", [phase, job_id])


def live_jobs(store: Store, kind: str) -> pd.DataFrame:
    """KIND's background jobs whose process still runs, newest first, with their phase."""
    df = store.query_df(
        "SELECT job_id, ref, pid, pid_start, phase, created_at FROM jobs "
        "WHERE kind = ? AND status = 'running' ORDER BY created_at DESC",
        [kind],
    )
    reap_children()
    alive = [
        processes.is_alive(as_int(p), as_int(t)) for p, t in zip(df.pid, df.pid_start, strict=True)
    ]
    return df[alive] if len(df) else df


def live_status(status: str, pid, pid_start, active: tuple[str, ...] = ("running",)) -> str:
    """STATUS as it is now: an active row whose process has ended (killed, crashed) is 'stopped'."""
    if status in active and not processes.is_alive(as_int(pid), as_int(pid_start)):
        return "stopped"
    return status


def as_int(value) -> int | None:
    """A pid or start time read back from the store (None, NaN from pandas, or a number)."""
    try:
        return None if value is None or value != value else int(value)  # NaN != NaN
    except (TypeError, ValueError):
        return None


def taken_by_other(pid, pid_start) -> bool:
    """True when another live process holds a row that names (PID, PID_START)."""
    me = processes.current()
    pid, pid_start = as_int(pid), as_int(pid_start)
    return (pid, pid_start) != (me.pid, me.start) and processes.is_alive(pid, pid_start)


def reap_children() -> None:
    """Collect finished child processes so they do not linger as zombies in the UI process."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def send_cancel(pid, pid_start) -> bool:
    """SIGTERM the job process (PID, PID_START); False if that process is not running."""
    reap_children()
    pid, pid_start = as_int(pid), as_int(pid_start)
    if not processes.is_alive(pid, pid_start):
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def job_for_ref(store: Store, ref: str) -> dict | None:
    rows = store.query(
        "SELECT job_id, pid, pid_start, log_path FROM jobs WHERE ref = ? "
        "ORDER BY created_at DESC LIMIT 1",
        [ref],
    )
    if not rows:
        return None
    job_id, pid, pid_start, log_path = rows[0]
    return {"job_id": job_id, "pid": pid, "pid_start": pid_start, "log_path": log_path}


def read_log_tail(log_path: str | None, n_lines: int = 20) -> str:
    """The last lines of a job's log, progress bars reduced to their latest state."""
    if not log_path or not Path(log_path).exists():
        return ""
    data = Path(log_path).read_bytes()[-20000:].decode("utf-8", "replace")
    lines = [ln.rsplit("\r", 1)[-1] for ln in data.splitlines()]
    return "\n".join([ln for ln in lines if ln.strip()][-n_lines:])


def job_error(store: Store, job_id: str) -> str | None:
    """The `error:` line a finished job printed, or None while it runs or if it had none."""
    rows = store.query(
        "SELECT pid, pid_start, message, log_path FROM jobs WHERE job_id = ?", [job_id]
    )
    if not rows:
        return None
    pid, pid_start, message, log_path = rows[0]
    reap_children()
    if processes.is_alive(as_int(pid), as_int(pid_start)):
        return None
    if message:
        return message
    errors = [ln for ln in read_log_tail(log_path, 50).splitlines() if "error:" in ln]
    return errors[-1].strip() if errors else None


# Rows that a process works on while it reads a dataset: scoring runs, probe training, validations
# (of a run of that dataset), and score jobs started from the UI that have not claimed a run yet.
_WORK = (
    "SELECT 'scoring run' AS what, run_id AS id, pid, pid_start FROM runs "
    "WHERE dataset = ? AND status = 'running' "
    "UNION ALL SELECT 'probe training', probe_id, pid, pid_start FROM probes "
    "WHERE dataset = ? AND status IN ('queued', 'running') "
    "UNION ALL SELECT 'validation', v.validation_id, v.pid, v.pid_start FROM validations v "
    "JOIN runs r USING (run_id) WHERE r.dataset = ? AND v.status = 'running' "
    "UNION ALL SELECT 'scoring job', job_id, pid, pid_start FROM jobs "
    "WHERE kind = 'score' AND ref = ? AND status = 'running'"
)


class DatasetInUse(InputError):
    """A dataset cannot be dropped or replaced while a live job reads it."""


def check_dataset_free(con, name: str) -> None:
    """DatasetInUse naming the live jobs (scoring, probe training, validation) that read NAME.

    Takes the connection of the transaction that would drop or replace the dataset.
    """
    live: dict[int, tuple[str, str]] = {}
    for what, ident, pid, pid_start in con.execute(_WORK, [name] * 4).fetchall():
        if processes.is_alive(as_int(pid), as_int(pid_start)):
            live.setdefault(int(pid), (what, ident))  # a job and the run it claimed: one process
    if not live:
        return
    (pid, (what, ident)), *others = live.items()
    more = f" and {len(others)} more" if others else ""
    where = {"validation": "Validate"}.get(what.split()[0], "Score")
    raise DatasetInUse(
        f"dataset '{name}' is in use by {what} {ident} (process {pid}){more} — wait for it to "
        f"finish or stop it first: infoprune cancel {ident}",
        ui=f"Dataset '{name}' is in use by {what} {ident}{more} — wait for it to finish or "
        f"cancel it on the {where} page first.",
    )


def get_job(store: Store, job_id: str) -> dict:
    """A background job's row, its status as it is now (see `live_status`)."""
    cols = ["job_id", "kind", "ref", "pid", "pid_start", "status", "message", "log_path"]
    cols += ["created_at", "finished_at"]
    rows = store.query(f"SELECT {', '.join(cols)} FROM jobs WHERE job_id = ?", [job_id])
    if not rows:
        raise InputError(f"unknown job '{job_id}'")
    job = dict(zip(cols, rows[0], strict=True))
    reap_children()
    job["status"] = live_status(job["status"], job["pid"], job["pid_start"])
    return job


# ---- the rows long jobs work on -----------------------------------------------------------------


@dataclass(frozen=True)
class JobKind:
    """One table of long jobs (scoring runs, probe training, validations) and how to name them.

    Every such table has `status`, `pid`, `pid_start`, `error`, `updated_at` and `finished_at`; a
    process claims a row, reports on it and finishes it, and `live_status` tells a row whose
    process has gone (killed, crashed) from one that is still being worked on.
    """

    table: str
    key: str
    noun: str  # "run" in "run run-1234 is already being scored by process 42"
    busy: str  # "being scored"
    active: tuple[str, ...] = ("running",)
    on_claim: str = ""  # extra assignments when a process takes the row over


RUNS = JobKind("runs", "run_id", "run", "being scored", on_claim=", started_at = now()")
PROBES = JobKind("probes", "probe_id", "probe", "being trained", active=("queued", "running"))
VALIDATIONS = JobKind("validations", "validation_id", "validation", "running in process")


def job_row(con, kind: JobKind, key: str) -> tuple[str, int | None, int | None] | None:
    """(status, pid, pid_start) of row KEY, or None."""
    rows = con.execute(
        f"SELECT status, pid, pid_start FROM {kind.table} WHERE {kind.key} = ?", [key]
    ).fetchall()
    return rows[0] if rows else None


def refuse_if_taken(kind: JobKind, key: str, row) -> None:
    """InputError when another live process works on row KEY (status, pid, pid_start)."""
    if row is not None and row[0] in kind.active and taken_by_other(row[1], row[2]):
        by = "" if kind.busy.endswith("process") else " by process"
        raise InputError(f"{kind.noun} {key} is already {kind.busy}{by} {row[1]}")


def claim(con, kind: JobKind, key: str) -> bool:
    """Take row KEY over for this process (refused while another live process holds it).

    False when there is no such row yet: the caller inserts it with `owner()`'s pid columns.
    """
    row = job_row(con, kind, key)
    if row is None:
        return False
    refuse_if_taken(kind, key, row)
    me = processes.current()
    con.execute(
        f"UPDATE {kind.table} SET status = 'running', pid = ?, pid_start = ?, error = NULL, "
        f"updated_at = now(), finished_at = NULL{kind.on_claim} WHERE {kind.key} = ?",
        [me.pid, me.start, key],
    )
    return True


def owner() -> processes.ProcessIdentity:
    """The pid columns a new row gets when this process creates it to work on it."""
    return processes.current()


def finish(con, kind: JobKind, key: str, status: str, error: str | None = None, **also) -> None:
    """Record how row KEY ended and release it; ALSO sets further columns (name=value)."""
    extra = "".join(f", {column} = ?" for column in also)
    con.execute(
        f"UPDATE {kind.table} SET status = ?, error = ?, pid = NULL, pid_start = NULL, "
        f"updated_at = now(), finished_at = CASE WHEN ? = 'done' THEN now() ELSE finished_at END"
        f"{extra} WHERE {kind.key} = ?",
        [status, error, status, *also.values(), key],
    )


def with_live_status(df: pd.DataFrame, kind: JobKind) -> pd.DataFrame:
    """DF (rows of KIND's table, with pid and pid_start) with each status as it is now."""
    df["status"] = [
        live_status(s, p, t, kind.active)
        for s, p, t in zip(df["status"], df["pid"], df["pid_start"], strict=True)
    ]
    return df


def is_live(store: Store, kind: JobKind, key: str) -> bool:
    """True while a live process works on row KEY."""
    with store.connect() as con:
        row = job_row(con, kind, key)
    return row is not None and live_status(*row, active=kind.active) in kind.active


def known_row(store: Store, kind: JobKind, key: str) -> tuple:
    """(status, pid, pid_start) of row KEY, or an InputError naming the rows that exist."""
    with store.connect() as con:
        row = job_row(con, kind, key)
        if row is not None:
            return row
        known = con.execute(
            f"SELECT {kind.key} FROM {kind.table} ORDER BY created_at DESC LIMIT 10"
        ).fetchall()
    hint = f"{kind.noun}s are: {', '.join(k[0] for k in known)}" if known else "none yet"
    raise InputError(f"unknown {kind.noun} '{key}' ({hint})")


def cancel(store: Store, kind: JobKind, key: str) -> bool:
    """SIGTERM the process working on row KEY; False if none is. Unknown KEY: InputError."""
    _status, pid, pid_start = known_row(store, kind, key)
    return send_cancel(pid, pid_start)
