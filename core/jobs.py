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
from pathlib import Path

import pandas as pd

from core.config import jobs_dir
from core.store import Store


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
    """Start `infoprune ARGV --db STORE` in the background and return its job id."""
    job_id = f"{kind}-{uuid.uuid4().hex[:8]}"
    log_dir = jobs_dir(store.path)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{job_id}.log"
    cmd = [sys.executable, "-m", "core.cli", *argv, "--db", str(store.path)]
    env = dict(os.environ, INFOPRUNE_JOB_ID=job_id, PYTHONUNBUFFERED="1")
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
            "INSERT INTO jobs (job_id, kind, ref, argv, pid, status, log_path, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?, now())",
            [job_id, kind, ref, json.dumps(argv), proc.pid, str(log_path)],
        )
    return job_id


def pid_is_ours(pid: int | None) -> bool:
    """True while PID is a live infoprune process (pids are reused, so check the command line)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and (b"core.cli" in cmdline or b"infoprune" in cmdline)


def reap_children() -> None:
    """Collect finished child processes so they do not linger as zombies in the UI process."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def send_cancel(pid: int | None) -> bool:
    """SIGTERM an infoprune process; False if it is not running."""
    if not pid_is_ours(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def list_jobs(store: Store, kind: str | None = None) -> pd.DataFrame:
    """Background jobs, newest first, with whether each process is still alive."""
    reap_children()
    df = store.query_df(
        "SELECT job_id, kind, ref, pid, status, log_path, created_at FROM jobs "
        + ("WHERE kind = ? " if kind else "")
        + "ORDER BY created_at DESC",
        [kind] if kind else [],
    )
    df["alive"] = [pid_is_ours(int(p)) if pd.notna(p) else False for p in df["pid"]]
    return df


def job_for_ref(store: Store, ref: str) -> dict | None:
    rows = store.query(
        "SELECT job_id, pid, log_path FROM jobs WHERE ref = ? ORDER BY created_at DESC LIMIT 1",
        [ref],
    )
    if not rows:
        return None
    job_id, pid, log_path = rows[0]
    return {"job_id": job_id, "pid": pid, "log_path": log_path}


def read_log_tail(log_path: str | None, n_lines: int = 20) -> str:
    """The last lines of a job's log, progress bars reduced to their latest state."""
    if not log_path or not Path(log_path).exists():
        return ""
    data = Path(log_path).read_bytes()[-20000:].decode("utf-8", "replace")
    lines = [ln.rsplit("\r", 1)[-1] for ln in data.splitlines()]
    return "\n".join([ln for ln in lines if ln.strip()][-n_lines:])


def job_error(store: Store, job_id: str) -> str | None:
    """The `error:` line a finished job printed, or None while it runs or if it had none."""
    rows = store.query("SELECT pid, log_path FROM jobs WHERE job_id = ?", [job_id])
    if not rows or pid_is_ours(rows[0][0]):
        return None
    reap_children()
    errors = [ln for ln in read_log_tail(rows[0][1], 50).splitlines() if "error:" in ln]
    return errors[-1].strip() if errors else None
