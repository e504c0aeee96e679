"""`infoprune score`: information content of every sample of a dataset, into the store.

With `--engine ray` the same numbers come from a Ray cluster; with `--input`/`--output` a corpus of
Parquet/JSONL shards is scored into Parquet score shards without entering the store.
"""

from __future__ import annotations

import sys

from core.options import add_options, from_args
from core.score_options import ScoreOptions


def register(sub, parents) -> None:
    p = sub.add_parser(
        "score",
        parents=parents,
        help="score every sample of a dataset with a causal LM (or model-free measures)",
    )
    p.add_argument("--dataset", metavar="NAME", help="dataset in the store (unless --input)")
    add_options(p, ScoreOptions)
    ray = p.add_argument_group("scale-out (docs/scale-out.md)")
    ray.add_argument("--engine", default="local", choices=["local", "ray"])
    ray.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster: auto or ray://HOST:PORT (default: start one)",
    )
    ray.add_argument(
        "--actors", type=int, metavar="N", help="scoring actors (default: one per GPU, else CPU)"
    )
    ray.add_argument("--input", metavar="GLOB", help="Parquet/JSONL shards to score (needs ray)")
    ray.add_argument("--output", metavar="DIR", help="folder for the score shards of --input")
    ray.add_argument("--text-column", metavar="C", help="text column of --input (auto-detected)")
    ray.add_argument(
        "--id-column", metavar="C", help="id column of --input (default: file path + row)"
    )
    p.set_defaults(func=run)


def _check_combination(args) -> None:
    """Which flags go together, said in one line before anything starts."""
    from core.errors import InputError

    if args.input:
        if args.engine != "ray":
            raise InputError("--input needs --engine ray")
        if not args.output:
            raise InputError("--input needs --output DIR for the score shards")
        if args.dataset:
            raise InputError("pass either --dataset or --input, not both")
        return
    if not args.dataset:
        raise InputError("--dataset NAME is required (or --input GLOB with --engine ray)")
    for flag in ("output", "text_column", "id_column"):
        if getattr(args, flag):
            raise InputError(f"--{flag.replace('_', '-')} applies to --input only")
    if args.engine == "local" and (args.address or args.actors):
        raise InputError("--address and --actors need --engine ray")


def run(args, store) -> int:
    from tqdm import tqdm

    from core.jobs import CancelToken
    from core.scoring import score_dataset

    _check_combination(args)
    opts = from_args(ScoreOptions, args)
    cancel = CancelToken().install()
    bar = tqdm(desc="score", unit=" samples", file=sys.stderr, disable=None, dynamic_ncols=True)

    def on_progress(p):
        bar.total = p.n_total
        bar.update(p.n_done - bar.n)
        if p.tokens_per_s:
            bar.set_postfix_str(f"{p.tokens_per_s:,.0f} tok/s")

    try:
        if args.input:
            return _run_shards(args, opts, cancel, on_progress)
        if args.engine == "ray":
            from core.ray_engine import score_dataset_ray

            outcome = score_dataset_ray(
                store,
                args.dataset,
                opts,
                address=args.address,
                actors=args.actors,
                cancel=cancel,
                on_progress=on_progress,
            )
        else:
            outcome = score_dataset(
                store, args.dataset, opts, cancel=cancel, on_progress=on_progress
            )
    finally:
        bar.close()
    if outcome.reused:
        print(
            f"reusing finished run {outcome.run_id} (same model, dataset and settings)",
            file=sys.stderr,
        )
    elif outcome.status == "cancelled":
        print(f"run {outcome.run_id} cancelled; run the same command to resume", file=sys.stderr)
    print(outcome.run_id)
    return 0 if outcome.status == "done" else 130


def _run_shards(args, opts, cancel, on_progress) -> int:
    from core.ray_engine import score_shards

    report = score_shards(
        args.input,
        args.output,
        opts,
        text_column=args.text_column,
        id_column=args.id_column,
        address=args.address,
        actors=args.actors,
        cancel=cancel,
        on_progress=on_progress,
    )
    print(report.line(), file=sys.stderr)
    if report.status != "done":
        print("cancelled; run the same command to score the remaining shards", file=sys.stderr)
    print(report.output_dir)
    return 0 if report.status == "done" else 130
