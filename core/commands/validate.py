"""`infoprune validate`: does a pruning rule help here? Retrain small models and compare."""

from __future__ import annotations

import sys


def register(sub, parents) -> None:
    p = sub.add_parser(
        "validate",
        parents=parents,
        help="retrain small models on pruned, random and full data; compare held-out bits",
        description=(
            "Split off a held-out evaluation set (never pruned, never seen by the probe), then for "
            "each seed train the probe's recipe from scratch on all of a training pool, on the "
            "part the rule keeps, and on a random part with as many tokens; print held-out bits "
            "per token and per byte (mean ± std over seeds). Running the same command again "
            "resumes: finished arms are skipped."
        ),
    )
    p.add_argument("--run", required=True, metavar="RUN", help="a finished scoring run")
    p.add_argument("--score", default="bits_per_token", help="score the rule ranks by")
    p.add_argument("--rule", required=True, choices=["prune-low", "prune-high", "keep-middle"])
    p.add_argument(
        "--ratios",
        default="0.1,0.2,0.3",
        metavar="R,R,...",
        help="shares of samples to prune; keep-middle takes LOW:HIGH pairs (0.1:0.05), and a "
        "plain R there prunes R/2 from each end (default 0.1,0.2,0.3)",
    )
    p.add_argument("--seeds", type=int, metavar="N", help="seeds per arm (default 3; 1 if --quick)")
    p.add_argument("--size", default="tiny", choices=["tiny", "small"], help="model size")
    p.add_argument(
        "--budget",
        default="equal-steps",
        choices=["equal-steps", "equal-epochs"],
        help="every arm the same optimiser steps, or the same passes over its data",
    )
    p.add_argument(
        "--quick", action="store_true", help="a smaller pool and fewer steps (demos, tests)"
    )
    p.add_argument("--json", metavar="PATH", help="also write the result rows as JSON")
    p.set_defaults(func=run)


def run(args, store) -> int:
    from core.jobs import CancelToken
    from core.validate import (
        check_spec,
        format_summary,
        load_results,
        make_spec,
        run_validation,
        summarize,
        write_results_json,
    )

    spec = make_spec(
        args.run,
        args.rule,
        args.ratios,
        score=args.score,
        seeds=args.seeds,
        size=args.size,
        budget=args.budget,
        quick=args.quick,
    )
    check_spec(store, spec)
    cancel = CancelToken().install()
    print(f"validation {spec.validation_id}: {len(spec.arms())} arms", file=sys.stderr)
    outcome = run_validation(store, spec, cancel=cancel, on_event=_print_event)
    results = load_results(store, outcome.validation_id)
    if args.json:
        write_results_json(args.json, results)
    print(format_summary(summarize(results)))
    if outcome.status == "cancelled":
        print(
            f"validation {outcome.validation_id} cancelled; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    return 0


def _print_event(e) -> None:
    """One log line per finished arm, and one per fifth of an arm's steps (the UI shows these)."""
    ratio = "" if e.ratio is None else f" ratio {e.ratio:g}"
    head = f"[{e.index}/{e.n_total}] {e.arm}{ratio} seed {e.seed}"
    if e.skipped:
        print(f"{head}: already done", file=sys.stderr)
    elif e.result is not None:
        r = e.result
        print(
            f"{head}: {r['val_bits_per_token']:.4f} bits/token, {r['val_bits_per_byte']:.4f} "
            f"bits/byte held out; {r['train_tokens']:,} train tokens, {r['steps']} steps, "
            f"{r['seconds']:.0f} s",
            file=sys.stderr,
        )
    elif e.total_steps and e.step % max(1, e.total_steps // 5) == 0 and e.step < e.total_steps:
        print(f"{head}: step {e.step}/{e.total_steps}", file=sys.stderr)
