"""`infoprune train-probe --dataset NAME --out DIR`: train the data probe on part of a dataset."""

from __future__ import annotations

import argparse
import sys

from core.options import add_options, from_args
from core.train_options import ProbeOptions


def register(sub, parents) -> None:
    p = sub.add_parser(
        "train-probe",
        parents=parents,
        help="train a small GPT-2 (the data probe) on a fraction of a dataset",
    )
    p.add_argument("--dataset", required=True, metavar="NAME")
    p.add_argument("--out", required=True, metavar="DIR", help="new (or resumable) directory")
    add_options(p, ProbeOptions)
    # Set by start_probe_job so the background process reports into the row the UI already shows.
    p.add_argument("--probe-id", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args, store) -> int:
    from tqdm import tqdm

    from core.jobs import CancelToken
    from core.probe import run_probe

    opts = from_args(ProbeOptions, args)
    cancel = CancelToken().install()
    bar = tqdm(desc="train-probe", unit=" steps", file=sys.stderr, disable=None, dynamic_ncols=True)
    post: dict[str, str] = {}

    def on_progress(p):
        bar.total = p.total_steps
        bar.update(p.step - bar.n)
        if p.train_bits is not None:
            post["train"] = f"{p.train_bits:.2f}"
        if p.val_bits is not None:
            post["val"] = f"{p.val_bits:.2f}"
        if post:
            bar.set_postfix_str(" ".join(f"{k} {v} bits/tok" for k, v in post.items()))

    try:
        outcome = run_probe(
            store,
            args.dataset,
            args.out,
            opts,
            probe_id=args.probe_id,
            cancel=cancel,
            on_progress=on_progress,
        )
    finally:
        bar.close()
    if outcome.status == "cancelled":
        print(
            f"probe {outcome.probe_id} cancelled at step {outcome.step}/{outcome.total_steps}; "
            "run the same command to resume",
            file=sys.stderr,
        )
        print(outcome.out_dir)
        return 130
    c = outcome.card
    print(
        f"probe {outcome.probe_id}: {c['size']} GPT-2 ({c['config']['n_params']:,} parameters, "
        f"{c['config']['weights_dtype']}), vocabulary {c['config']['vocab_size']:,}"
    )
    print(
        f"trained on {c['n_train_samples']:,} samples of '{c['dataset']}' "
        f"(fraction {c['fraction']}, seed {c['seed']}): {c['steps']:,} steps, "
        f"{c['tokens_seen']:,} tokens ({c['epochs']} epochs) "
        f"in {c['training_seconds'] / 60:.1f} min"
    )
    print(
        f"validation ({c['n_val_samples']:,} samples): {c['val_bits_per_token']:.3f} bits/token, "
        f"{c['val_bits_per_byte']:.3f} bits/byte; unigram baseline "
        f"{c['val_unigram_bits_per_token']:.3f} bits/token"
    )
    print(f"weights hash {c['model_hash']}")
    print(outcome.out_dir)
    return 0
