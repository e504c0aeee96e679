"""`infoprune ingest SOURCE --name NAME`: store a dataset."""

from __future__ import annotations

import sys


def register(sub, parents) -> None:
    p = sub.add_parser(
        "ingest",
        parents=parents,
        help="store a dataset (JSONL/JSON/CSV/TSV/Parquet, .txt folder, save_to_disk, hub id)",
    )
    p.add_argument("source", metavar="SOURCE", help="file, folder, glob or hub dataset id")
    p.add_argument("--name", required=True, help="dataset name in the store")
    p.add_argument("--text-column", metavar="C", help="column holding the text (auto-detected)")
    p.add_argument("--id-column", metavar="C", help="unique id column (default: row position)")
    p.add_argument("--split", metavar="S", help="split of a save_to_disk or hub dataset")
    p.add_argument("--limit", metavar="N", type=int, help="read at most N rows")
    p.add_argument("--replace", action="store_true", help="overwrite a dataset of the same name")
    p.add_argument(
        "--max-line-size",
        metavar="BYTES",
        type=int,
        help="CSV/TSV: longest row DuckDB reads (default 2,000,000 bytes)",
    )
    p.add_argument(
        "--max-object-size",
        metavar="BYTES",
        type=int,
        help="JSON/JSONL: largest record DuckDB reads (default 16,777,216 bytes)",
    )
    p.set_defaults(func=run)


def run(args, store) -> int:
    from tqdm import tqdm

    from core.ingest import ingest_dataset

    with tqdm(desc="ingest", unit=" rows", file=sys.stderr, disable=None) as bar:
        report = ingest_dataset(
            store,
            args.source,
            args.name,
            text_column=args.text_column,
            id_column=args.id_column,
            split=args.split,
            limit=args.limit,
            replace=args.replace,
            progress=lambda n: bar.update(n - bar.n),
            max_line_size=args.max_line_size,
            max_object_size=args.max_object_size,
        )
    print(report.line())
    return 0
