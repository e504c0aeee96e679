"""`ingest-scores DIR --dataset NAME`: a finished folder of score shards attached as a done run.

The shards must hold each of the dataset's sample ids exactly once. Measures that need the whole
dataset's statistics (`deferred_measures` in the manifest) are computed here, over the dataset's own
texts and word counts, and so are the duplicate counts (core/duplicates.py), so the attached run
equals a local one in every column.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.corpus import load_corpus_for
from core.datasets import DatasetChanged, DatasetInfo, change_since, get_dataset, read_texts_after
from core.duplicates import prepare_duplicates, write_duplicates
from core.errors import InputError, first_line
from core.measures.base import Batch, Measure, compute_all
from core.measures.registry import all_measures
from core.ray_engine.shard_mode import read_manifest
from core.scores import table_columns
from core.scoring import RunOutcome, RunSpec, RunTotals, insert_run, insert_scores
from core.store import Store


def ingest_score_shards(store: Store, output_dir: str, dataset: str) -> RunOutcome:
    """Attach a finished score-shard folder to DATASET as a done run (ids must match exactly)."""
    out = Path(output_dir).expanduser()
    manifest = read_manifest(out)
    if manifest.get("status") != "done":
        raise InputError(
            f"{out} is unfinished ({len(manifest.get('files', []))} of "
            f"{manifest.get('n_files', '?')} shards) — run the same score command again"
        )
    paths = [_check_shard(out, e) for e in manifest["files"]]
    info = get_dataset(store, dataset)
    model, model_hash = manifest["model"], manifest["model_hash"]
    spec = RunSpec(info, model, model_hash, manifest["settings"], manifest.get("device"))
    found = store.query(
        "SELECT run_id FROM runs WHERE config_key = ? AND status = 'done' LIMIT 1", [spec.key]
    )
    if found:
        return RunOutcome(found[0][0], "done", reused=True)
    scores = _read_shards(paths)
    _check_ids(store, info.name, scores.column("sample_id"), out)
    deferred = [m for m in all_measures() if m.name in manifest.get("deferred_measures", [])]
    if deferred:
        scores = _add_deferred(store, info, scores, deferred)
    return _insert_done_run(store, spec, float(manifest.get("seconds") or 0), scores)


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
            f"score shard {path} is corrupt ({first_line(exc)}) — delete it and run the same "
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
            f"cannot read the score shards ({first_line(exc)}) — delete the bad shard and run "
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


def _add_deferred(
    store: Store, info: DatasetInfo, scores: pa.Table, measures: list[Measure]
) -> pa.Table:
    """Measures that need corpus-wide statistics, computed here over the dataset's own texts."""
    from core.engine import SampleScore

    corpus = load_corpus_for(store, info, measures)
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
        computed = compute_all(measures, batch, corpus)
        for m in measures:
            values[m.name].update(zip([r[1] for r in rows], computed[m.name], strict=True))
    ids = scores.column("sample_id").to_pylist()
    for m in measures:
        col = pa.array([values[m.name][i] for i in ids], pa.float64())
        if m.name in scores.column_names:
            scores = scores.drop_columns([m.name])
        scores = scores.append_column(m.name, col)
    return scores


def _insert_done_run(store: Store, spec: RunSpec, seconds: float, scores: pa.Table) -> RunOutcome:
    """The run and its scores in one transaction: a run is never `done` without its scores."""
    known = set(table_columns())
    scores = scores.select(["sample_id"] + [c for c in scores.column_names if c in known])
    tokens = 0
    if "n_tokens" in scores.column_names:
        tokens = int(pc.sum(scores.column("n_tokens")).as_py() or 0)
    n_bytes = int(pc.sum(scores.column("n_bytes")).as_py() or 0)
    info = spec.info
    duplicates = prepare_duplicates(store, info.name, info.fingerprint)
    with store.transaction() as con:
        change = change_since(con, info.name, info.fingerprint)
        if change:
            raise DatasetChanged(f"{change} while its scores were read — run ingest-scores again")
        totals = RunTotals(scores.num_rows, tokens, n_bytes, seconds)
        run_id = insert_run(con, spec, info.n_samples, info.n_bytes, done=totals)
        insert_scores(con, run_id, scores)
        if write_duplicates(con, run_id, duplicates):
            raise DatasetChanged(
                "the dataset changed while its duplicates were counted — run ingest-scores again"
            )
    return RunOutcome(run_id, "done", reused=False)
