"""Scale-out scoring on Ray Data: the local scoring step (core/batch_scorer.py) in an actor pool.

Three features, one module each: a store dataset scored into an ordinary run (`store_mode`), a
corpus of Parquet/JSONL shards scored into Parquet score shards (`shard_mode`), and such a folder
attached to a store dataset as a run (`attach`); `cluster` holds what they share, `signatures` the
near-duplicate pass's MinHash step on the cluster.
"""

from core.ray_engine.attach import ingest_score_shards
from core.ray_engine.cluster import RAY_MISSING, batch_rows, ray_cluster, require_ray
from core.ray_engine.shard_mode import (
    MANIFEST,
    ShardReport,
    ShardWriter,
    list_input_files,
    score_shards,
    shard_name,
)
from core.ray_engine.store_mode import score_dataset_ray

__all__ = [
    "MANIFEST",
    "RAY_MISSING",
    "ShardReport",
    "ShardWriter",
    "batch_rows",
    "ingest_score_shards",
    "list_input_files",
    "ray_cluster",
    "require_ray",
    "score_dataset_ray",
    "score_shards",
    "shard_name",
]
