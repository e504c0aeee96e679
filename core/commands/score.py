"""`infoprune score`: information content of every sample of a dataset, into the store."""

from __future__ import annotations

import sys


def register(sub, parents) -> None:
    p = sub.add_parser(
        "score",
        parents=parents,
        help="score every sample of a dataset with a causal LM (or model-free measures)",
    )
    p.add_argument("--dataset", required=True, metavar="NAME")
    p.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="local HF model directory, hub id, or 'none' for model-free measures only",
    )
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--window", type=int, metavar="W", help="positions per window (model max)")
    p.add_argument("--stride", type=int, metavar="S", help="window step (default W/2)")
    p.add_argument("--max-batch-tokens", type=int, default=8192, metavar="N")
    p.add_argument("--limit", type=int, metavar="N", help="score only the first N samples")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--allow-pickle", action="store_true", help="allow .bin (pickle) weights")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    p.set_defaults(func=run)


def run(args, store) -> int:
    from tqdm import tqdm

    from core.jobs import CancelToken
    from core.scoring import ScoreOptions, score_dataset

    opts = ScoreOptions(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        window=args.window,
        stride=args.stride,
        max_batch_tokens=args.max_batch_tokens,
        limit=args.limit,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
        compile=args.compile,
    )
    cancel = CancelToken().install()
    bar = tqdm(desc="score", unit=" samples", file=sys.stderr, disable=None, dynamic_ncols=True)

    def on_progress(p):
        bar.total = p.n_total
        bar.update(p.n_done - bar.n)
        if p.tokens_per_s:
            bar.set_postfix_str(f"{p.tokens_per_s:,.0f} tok/s")

    try:
        outcome = score_dataset(store, args.dataset, opts, cancel=cancel, on_progress=on_progress)
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
