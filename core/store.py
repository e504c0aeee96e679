"""The workspace store: one DuckDB file, opened briefly by whoever needs it.

DuckDB lets one process hold a database file at a time. The UI, the CLI and background workers are
separate processes, so nobody keeps the file open: every unit of work opens it, does one transaction
and closes it, and a process that finds the file locked waits and retries. Scoring commits a batch
every few seconds, so the UI waits at most that long; a long ingest makes others wait, never fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from core.config import jobs_dir, resolve_db_path
from core.errors import InputError, first_line
from core.scores import ENGINE_COLUMNS, get_score, table_columns
from core.scratch import scratch_folder, sweep_store

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS datasets (
        name VARCHAR PRIMARY KEY,
        source VARCHAR NOT NULL,
        format VARCHAR NOT NULL,
        text_column VARCHAR NOT NULL,
        id_column VARCHAR,
        n_samples BIGINT NOT NULL,
        n_rows_read BIGINT NOT NULL,
        n_skipped BIGINT NOT NULL,
        n_replaced_bytes BIGINT NOT NULL,
        n_bytes BIGINT NOT NULL,
        columns JSON NOT NULL,
        meta_table VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS samples (
        dataset VARCHAR NOT NULL,
        sample_id VARCHAR NOT NULL,
        row_idx BIGINT NOT NULL,
        text VARCHAR NOT NULL,
        n_bytes BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY,
        dataset VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        engine VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        model_hash VARCHAR,
        settings JSON NOT NULL,
        config_key VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        n_total BIGINT,
        n_done BIGINT DEFAULT 0,
        tokens_done BIGINT DEFAULT 0,
        bytes_done BIGINT DEFAULT 0,
        bytes_total BIGINT,
        last_row_idx BIGINT DEFAULT -1,
        tokens_per_s DOUBLE,
        seconds DOUBLE DEFAULT 0,
        device VARCHAR,
        dtype VARCHAR,
        pid INTEGER,
        pid_start BIGINT,
        error VARCHAR,
        created_at TIMESTAMP NOT NULL,
        started_at TIMESTAMP,
        updated_at TIMESTAMP,
        finished_at TIMESTAMP
    )""",
    f"""CREATE TABLE IF NOT EXISTS scores (
        run_id VARCHAR NOT NULL,
        sample_id VARCHAR NOT NULL,
        {", ".join(f"{c} {get_score(c).sql_type}" for c in ENGINE_COLUMNS)}
    )""",
    # Word counts of a dataset's whole text, per content fingerprint (core/corpus.py).
    """CREATE TABLE IF NOT EXISTS word_counts (
        fingerprint VARCHAR NOT NULL,
        word VARCHAR NOT NULL,
        count BIGINT NOT NULL
    )""",
    # The samples of a run that have a duplicate, and their clusters (core/duplicates.py).
    """CREATE TABLE IF NOT EXISTS dup_clusters (
        run_id VARCHAR NOT NULL,
        sample_id VARCHAR NOT NULL,
        cluster_id BIGINT NOT NULL,
        exact_cluster_id BIGINT
    )""",
    """CREATE TABLE IF NOT EXISTS probe_samples (
        model_hash VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        sample_id VARCHAR NOT NULL,
        role VARCHAR NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS probes (
        probe_id VARCHAR PRIMARY KEY,
        dataset VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        out_dir VARCHAR NOT NULL,
        settings JSON NOT NULL,
        status VARCHAR NOT NULL,
        step BIGINT DEFAULT 0,
        total_steps BIGINT,
        tokens_seen BIGINT DEFAULT 0,
        val_bits_per_token DOUBLE,
        seconds DOUBLE DEFAULT 0,
        pid INTEGER,
        pid_start BIGINT,
        error VARCHAR,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP,
        finished_at TIMESTAMP
    )""",
    """CREATE TABLE IF NOT EXISTS probe_metrics (
        probe_id VARCHAR NOT NULL,
        step BIGINT NOT NULL,
        split VARCHAR NOT NULL,
        bits_per_token DOUBLE NOT NULL,
        tokens_seen BIGINT,
        seconds DOUBLE
    )""",
    """CREATE TABLE IF NOT EXISTS validations (
        validation_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        score VARCHAR NOT NULL,
        rule VARCHAR NOT NULL,
        ratios JSON NOT NULL,
        settings JSON NOT NULL,
        status VARCHAR NOT NULL,
        n_done BIGINT DEFAULT 0,
        n_total BIGINT,
        pid INTEGER,
        pid_start BIGINT,
        error VARCHAR,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP,
        finished_at TIMESTAMP
    )""",
    """CREATE TABLE IF NOT EXISTS validation_results (
        validation_id VARCHAR NOT NULL,
        arm VARCHAR NOT NULL,
        ratio DOUBLE,
        seed INTEGER NOT NULL,
        val_bits_per_token DOUBLE,
        val_bits_per_byte DOUBLE,
        train_tokens BIGINT,
        steps BIGINT,
        seconds DOUBLE
    )""",
    # Each evaluation document's bits under each arm: per-group effects and bootstrap intervals.
    """CREATE TABLE IF NOT EXISTS validation_doc_bits (
        validation_id VARCHAR NOT NULL,
        eval_set VARCHAR NOT NULL,
        arm VARCHAR NOT NULL,
        ratio DOUBLE,
        seed INTEGER NOT NULL,
        doc INTEGER NOT NULL,
        bits DOUBLE NOT NULL,
        tokens BIGINT NOT NULL,
        n_bytes BIGINT NOT NULL
    )""",
    # The documents of each evaluation set of a validation, with their group (core/validate.py).
    """CREATE TABLE IF NOT EXISTS validation_eval_docs (
        validation_id VARCHAR NOT NULL,
        eval_set VARCHAR NOT NULL,
        doc INTEGER NOT NULL,
        sample_id VARCHAR NOT NULL,
        grp VARCHAR
    )""",
    # A sweep: its configurations in order, each an ordinary validation (core/sweep.py).
    """CREATE TABLE IF NOT EXISTS sweeps (
        sweep_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        configs JSON NOT NULL,
        settings JSON NOT NULL,
        created_at TIMESTAMP NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        ref VARCHAR,
        argv JSON NOT NULL,
        pid INTEGER,
        pid_start BIGINT,
        status VARCHAR NOT NULL,
        log_path VARCHAR,
        message VARCHAR,
        created_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP
    )""",
]

# Tables whose rows name the process working on them: `pid` and its start time `pid_start`
# (see core.processes: a pid alone may belong to another program by now).
PROCESS_TABLES = ("runs", "probes", "validations", "jobs")

DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file
_LOCK_HINTS = ("could not set lock", "conflicting lock")
_OPEN_CLOSE = threading.RLock()  # one open or close of a store at a time in this process
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_schema_ready: set[str] = set()
SCHEMA_PROBE_TABLE = "jobs"  # the last table SCHEMA creates
_schema_guard = threading.Lock()


def quote_ident(name: str) -> str:
    """Double-quote an SQL identifier (column names come from users' files)."""
    return '"' + name.replace('"', '""') + '"'


class Store:
    """A handle on one workspace file; cheap to create, holds no connection."""

    def __init__(self, path: str | os.PathLike | None = None, lock_timeout: float | None = None):
        self.path = resolve_db_path(path)
        self.lock_timeout = (
            lock_timeout
            if lock_timeout is not None
            else float(os.environ.get("INFOPRUNE_LOCK_TIMEOUT", "300"))
        )

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def owned_paths(self) -> list[Path]:
        """What the store is made of on disk, symlinks resolved: no command may write over these
        (or anything inside them). The file, DuckDB's write-ahead log, job logs, temporaries."""
        owned = []
        # Both names of a store reached through a symlink: DuckDB writes the file's own
        # write-ahead log, the commands their jobs and temporaries beside the name they were given.
        for db in dict.fromkeys(
            [self.path.expanduser().absolute(), self.path.expanduser().resolve()]
        ):
            owned += [db, db.with_name(db.name + ".wal"), jobs_dir(db), scratch_folder(db)]
        return [p.resolve() for p in dict.fromkeys(owned)]

    def refuse_own_path(self, target: str | os.PathLike) -> None:
        """An InputError when writing TARGET would write over (or into) the store's own files,
        symlinks resolved: the one check before any command writes a file a user named."""
        resolved = Path(target).expanduser().resolve()
        for owned in self.owned_paths():
            if resolved == owned or owned in resolved.parents or resolved in owned.parents:
                raise InputError(
                    f"{target} would write over the store {self.path} ({owned.name}) — "
                    "choose an output outside the store's files"
                )

    def sweep_temporaries(self) -> None:
        """Remove what killed commands of this store left in its scratch folder."""
        sweep_store(self.path.expanduser())

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file (waiting while another process holds it), yield, close."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _check_is_duckdb(self.path)
        # Threads of one process open and close one DuckDB instance: DuckDB's instance cache
        # races when one thread opens the file while another closes its last connection (a
        # refused open, or a connection to a half-closed database). Opens and closes of this
        # process take turns; the work in between does not.
        with _OPEN_CLOSE:
            con = _open_with_retry(str(self.path), self.lock_timeout)
        try:
            self._ensure_schema(con)
            yield con
        finally:
            with _OPEN_CLOSE:
                con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One all-or-nothing unit of work: committed on success, rolled back on any error."""
        with self.connect() as con:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()

    def query(self, sql: str, params: list | tuple | None = None) -> list[tuple]:
        """Run one parameterised query and return all rows."""
        with self.connect() as con:
            return con.execute(sql, params or []).fetchall()

    def query_df(self, sql: str, params: list | tuple | None = None):
        """Run one parameterised query and return a pandas DataFrame."""
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        key = str(self.path.resolve())
        if key in _schema_ready:
            try:  # one trivial query: a store file deleted and made anew has no tables yet
                con.execute(f"SELECT 1 FROM {SCHEMA_PROBE_TABLE} LIMIT 0").fetchall()
                return
            except duckdb.CatalogException:
                _schema_ready.discard(key)
        with _schema_guard:
            for ddl in SCHEMA:
                con.execute(ddl)
            for table in PROCESS_TABLES:  # stores made before pids were recorded with start times
                con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS pid_start BIGINT")
            # What a background job is doing before its progress counts (core.jobs.set_phase).
            con.execute("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS phase VARCHAR")
            # Held-out bits on the user's target set (validate --eval-dataset).
            for col in ("target_bits_per_token", "target_bits_per_byte"):
                con.execute(f"ALTER TABLE validation_results ADD COLUMN IF NOT EXISTS {col} DOUBLE")
            # Measures' and dataset-level columns, added to stores made before they existed.
            for col in [c for c in table_columns() if c not in ENGINE_COLUMNS]:
                if not _IDENT.match(col):
                    raise ValueError(f"score name {col!r} is not a plain identifier")
                con.execute(
                    f"ALTER TABLE scores ADD COLUMN IF NOT EXISTS {col} {get_score(col).sql_type}"
                )
            _schema_ready.add(key)


def _check_is_duckdb(path: Path) -> None:
    """Refuse a path that holds something else: DuckDB opens a Parquet or CSV file given as a
    database as an empty in-memory database, so the store would silently seem empty."""
    if path.is_dir():
        raise InputError(f"the store {path} is a folder — pass --db a .duckdb file")
    try:
        with open(path, "rb") as f:
            header = f.read(12)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot read the store {path}: {exc.strerror}") from exc
    if header and header[8:12] != DUCKDB_MAGIC:
        raise InputError(
            f"{path} is not a DuckDB store — pass --db an infoprune .duckdb file or a new path"
        )


def _open_with_retry(path: str, timeout: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            return duckdb.connect(path)
        except duckdb.ResourceInUseException as exc:
            # Threads of one process (the app's sessions) that open and close the same file at
            # the same moment race in DuckDB's instance cache: "Unique file handle conflict".
            # The file is fine; the next try gets the instance.
            if "unique file handle conflict" not in str(exc).lower() or time.monotonic() > deadline:
                raise InputError(f"cannot open the store {path}: {first_line(exc)}") from exc
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        except duckdb.IOException as exc:
            msg = str(exc).lower()
            if not any(h in msg for h in _LOCK_HINTS):
                raise InputError(f"cannot open the store {path}: {first_line(exc)}") from exc
            if time.monotonic() > deadline:
                raise InputError(
                    f"the store {path} stayed locked by another process for {timeout:.0f} s "
                    "— wait for it to finish or stop it, then retry"
                ) from exc
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
