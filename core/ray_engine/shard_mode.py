"""`score --engine ray --input GLOB --output DIR`: a corpus of shards in, score shards out.

Ray Data reads the Parquet/JSONL files (.gz and .zst too), the actors score them, and this process
writes one Parquet score shard per input file, named from the input's path, as soon as its last
row is back: a restarted job skips the shards already written. `DIR/_manifest.json` records the
configuration (a restart must match it) and, at the end, the counts.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from core.compression import open_raw, strip_compression
from core.errors import InputError, first_line
from core.jobs import CancelToken
from core.measures.base import Measure, corpus_wide
from core.ray_engine.cluster import (
    ActorWork,
    ModelPlan,
    actor_pool,
    batch_rows,
    map_scores,
    plan_model,
    ray_cluster,
    require_ray,
)
from core.score_options import ScoreOptions, validate_options
from core.scoring import Progress, measures_for
from core.scratch import write_text_atomically

MANIFEST = "_manifest.json"
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
HEAD_BYTES = 1 << 20  # what a JSONL file's rows are measured on


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
    kinds = {shard_kind(f) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise InputError(
            f"{pattern} must match Parquet files or JSONL files only, one format "
            f"(found: {', '.join(sorted({Path(f).suffix or f for f in files}))})"
        )
    root = Path(os.path.commonpath([os.path.abspath(os.path.dirname(f)) for f in files]))
    return [os.path.abspath(f) for f in files], kinds.pop(), root


def shard_kind(path: str) -> str | None:
    """parquet or json (JSON lines), compressed or not; None for anything else."""
    name, _compression = strip_compression(path)
    if name.endswith(".parquet"):
        return "parquet"
    return "json" if name.endswith(JSON_SUFFIXES) else None


def shard_name(input_path: str, root: Path) -> str:
    """Deterministic output name for an input file: readable stem + hash of its relative path."""
    rel = os.path.relpath(input_path, root)
    digest = hashlib.sha256(rel.encode()).hexdigest()[:12]
    stem = Path(rel).name.split(".")[0][:40]
    return f"scores-{stem}-{digest}.parquet"


def columns_of(path: str, kind: str) -> list[str]:
    """The columns of an input file: its Parquet schema, or the keys of its first JSON line."""
    if kind == "parquet":
        return pq.read_schema(path).names
    try:
        with open_raw(Path(path)) as f:
            for line in f:
                if line.strip():
                    return list(json.loads(line))
    except (OSError, EOFError, ValueError, zstandard.ZstdError) as exc:  # bad stream or JSON
        raise InputError(f"cannot read {path} as JSON lines ({first_line(exc)})") from exc
    raise InputError(f"{path} holds no JSON lines")


def bytes_per_row(path: str, kind: str, text_column: str) -> float:
    """A cheap estimate: Parquet footers, or the head of a JSONL file (decompressed)."""
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
    with open_raw(Path(path)) as f:
        head = f.read(HEAD_BYTES)
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

    require_ray()
    cancel = cancel or CancelToken()
    validate_options(opts)
    if opts.limit is not None:
        raise InputError("--limit applies to store datasets only — drop it with --input")
    files, kind, root = list_input_files(input_glob)
    columns = columns_of(files[0], kind)
    text_col = choose_text_column(columns, text_column)
    if id_column is not None and id_column == text_col:
        raise InputError(f"--id-column and the text column are both '{text_col}' — pick another")
    if id_column is not None and id_column not in columns:
        raise InputError(f"id column '{id_column}' not found; columns are: {', '.join(columns)}")
    out = Path(output_dir).expanduser()
    started = time.monotonic()
    with ray_cluster(address) as ray:
        plan = plan_model(ray, opts)
        measures = measures_for(plan.model_hash is not None)
        deferred = corpus_wide(measures)
        per_batch = [m for m in measures if m not in deferred]
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
            shards = PendingShards(pending, kind, text_col, id_column, root, names, out)
            status = _score_pending(ray, shards, plan, per_batch, actors, cancel, on_progress)
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
    write_json(out / MANIFEST, manifest)
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
        old = read_manifest(out)
        changed = [k for k in _CONFIG_KEYS if old.get(k) != manifest[k]]
        if changed:
            raise InputError(
                f"{out} holds scores of another configuration ({', '.join(changed)} differ) "
                "— pass a new --output folder"
            )
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty and holds no {MANIFEST} — pass a new --output folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, manifest)


@dataclass(frozen=True)
class PendingShards:
    """The input files still to score, how to read them, and where their score shards go."""

    files: list[str]
    kind: str  # parquet | json
    text_column: str
    id_column: str | None
    root: Path  # default ids and output names are relative to it
    names: dict[str, str]  # input file -> its score shard's name
    out: Path


def _score_pending(
    ray,
    shards: PendingShards,
    plan: ModelPlan,
    measures: list[Measure],
    actors: int | None,
    cancel: CancelToken,
    on_progress: Callable[[Progress], None] | None,
) -> str:
    n_actors, resources = actor_pool(ray, plan, actors, spare_cpus=1)
    rows = batch_rows(
        bytes_per_row(shards.files[0], shards.kind, shards.text_column),
        plan.opts.max_batch_tokens,
    )
    wanted = [shards.text_column] + ([shards.id_column] if shards.id_column else [])
    _settle_fsspec_http()
    with _preserving_order(ray):
        # Reads take no CPU slot (actors hold them); Ray retries a failed read task 3 times.
        if shards.kind == "parquet":
            ds = ray.data.read_parquet(shards.files, include_paths=True, num_cpus=0)
        else:
            ds = ray.data.read_json(shards.files, lines=True, include_paths=True, num_cpus=0)
    ds = ds.select_columns([*wanted, "path"]).rename_columns({shards.text_column: "text"})
    ds = map_scores(ray, ds, ActorWork(plan, measures, None, n_actors, resources, rows))
    n_total = None
    if shards.kind == "parquet":
        n_total = sum(pq.read_metadata(f).num_rows for f in shards.files)
    writer = ShardWriter(shards.out, shards.root, shards.names, shards.id_column)
    start = time.monotonic()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        writer.add(batch)
        if on_progress:
            elapsed = time.monotonic() - start
            on_progress(
                Progress(
                    n_done=writer.rows_seen,
                    n_total=n_total or 0,
                    tokens_per_s=writer.tokens_seen / elapsed
                    if plan.model_hash and elapsed
                    else None,
                    eta_s=None,
                )
            )
        if cancel.cancelled:
            return "cancelled"
    writer.finish(shards.files)
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


class ShardWriter:
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


def read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.exists():
        raise InputError(f"{out} has no {MANIFEST} — pass a folder written by `score --output`")
    try:
        manifest = json.loads(path.read_text())
        manifest["settings"]  # noqa: B018 - the one key every manifest has
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path} is corrupt ({first_line(exc)}) — re-run the score command"
        ) from exc
    return manifest


def write_json(path: Path, data: dict) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True))
