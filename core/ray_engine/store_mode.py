"""`score --engine ray --dataset NAME`: a store dataset scored on the cluster, committed here.

This process is the store's one writer: it reads the samples the run still lacks, the actors score
them, and RunWriter commits the results every few seconds as an ordinary run with engine 'ray'.
When all are scored, the duplicate pass signs the distinct texts on the cluster too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from core.corpus import CorpusStats, load_corpus_for
from core.datasets import get_dataset
from core.jobs import CancelToken
from core.measures.base import Measure
from core.ray_engine.cluster import (
    ActorWork,
    ModelPlan,
    actor_pool,
    batch_rows,
    map_scores,
    plan_model,
    ray_cluster,
    require_ray,
    worker_errors_unwrapped,
)
from core.ray_engine.signatures import sign_on_ray
from core.score_options import ScoreOptions, validate_options
from core.scoring import (
    TARGET_CHUNK_SECONDS,
    Progress,
    RunOutcome,
    RunSpec,
    RunWriter,
    measures_for,
    run_scoring,
)
from core.store import Store


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
    require_ray()
    cancel = cancel or CancelToken()
    validate_options(opts)
    info = get_dataset(store, dataset)
    with ray_cluster(address) as ray:
        plan = plan_model(ray, opts)
        measures = measures_for(plan.model_hash is not None)
        settings = {**plan.settings, "measures": [m.name for m in measures], "limit": opts.limit}
        spec = RunSpec(info, opts.model, plan.model_hash, settings, plan.device)

        def score(run_id: str, _last_row: int) -> str:
            with worker_errors_unwrapped():
                corpus = load_corpus_for(store, info, measures)
                todo = read_unscored(store, info.name, run_id, opts.limit)
                if todo.num_rows == 0:
                    return "done"
                ds = _scored_dataset(ray, todo, plan, measures, corpus, actors)
                writer = RunWriter(store, run_id, info, plan.model_hash is not None, on_progress)
                return _commit_as_scored(ds, writer, cancel)

        return run_scoring(store, spec, opts.limit, score, sign_on_ray(ray))


def read_unscored(store: Store, dataset: str, run_id: str, limit: int | None) -> pa.Table:
    """The run's samples that have no score yet (a resumed run skips the committed ones)."""
    with store.connect() as con:
        return con.sql(
            "SELECT s.sample_id, s.text FROM (SELECT sample_id, row_idx, text FROM samples "
            "WHERE dataset = ? ORDER BY row_idx LIMIT ?) s WHERE s.sample_id NOT IN "
            "(SELECT sample_id FROM scores WHERE run_id = ?) ORDER BY s.row_idx",
            params=[dataset, limit if limit is not None else 2**62, run_id],
        ).to_arrow_table()


def _scored_dataset(
    ray,
    todo: pa.Table,
    plan: ModelPlan,
    measures: list[Measure],
    corpus: CorpusStats | None,
    actors: int | None,
):
    """TODO as a Ray dataset in batches of about equal tokens, mapped through the actors."""
    n_actors, resources = actor_pool(ray, plan, actors, spare_cpus=0)
    avg_bytes = sum(pc.binary_length(todo.column("text")).to_pylist()) / todo.num_rows
    rows = batch_rows(avg_bytes, plan.opts.max_batch_tokens)
    rows = min(rows, math.ceil(todo.num_rows / n_actors))
    blocks = [todo.slice(i, rows) for i in range(0, todo.num_rows, rows)]
    work = ActorWork(plan, measures, corpus, n_actors, resources, rows)
    return map_scores(ray, ray.data.from_arrow(blocks), work)


def _commit_as_scored(ds, writer: RunWriter, cancel: CancelToken) -> str:
    """Commit the scores as they come back, every few seconds; stop early when cancelled."""
    pending: list[pa.Table] = []
    last_commit = time.monotonic()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        pending.append(batch)
        if time.monotonic() - last_commit >= TARGET_CHUNK_SECONDS:
            writer.commit(pa.concat_tables(pending).drop_columns(["_keep"]))
            pending.clear()
            last_commit = time.monotonic()
        if cancel.cancelled:
            break
    if pending:
        writer.commit(pa.concat_tables(pending).drop_columns(["_keep"]))
    return writer.outcome(cancel.cancelled)
