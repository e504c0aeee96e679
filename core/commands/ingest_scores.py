"""`infoprune ingest-scores DIR --dataset NAME`: attach score shards (`score --output`) as a run."""

from __future__ import annotations

import sys


def register(sub, parents) -> None:
    p = sub.add_parser(
        "ingest-scores",
        parents=parents,
        help="attach a folder of score shards (score --engine ray --output) to a dataset as a run",
    )
    p.add_argument("directory", metavar="DIR", help="folder written by `score --output`")
    p.add_argument("--dataset", required=True, metavar="NAME", help="dataset with the same ids")
    p.set_defaults(func=run)


def run(args, store) -> int:
    from core.ray_engine import ingest_score_shards

    outcome = ingest_score_shards(store, args.directory, args.dataset)
    if outcome.reused:
        print(f"already attached as run {outcome.run_id}", file=sys.stderr)
    print(outcome.run_id)
    return 0
