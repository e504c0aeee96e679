"""`infoprune validate`: does a pruning rule help here? Retrain small models and compare."""

from __future__ import annotations

import sys

from core.options import add_options, from_args
from core.validation_spec import ValidateOptions


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
    add_options(p, ValidateOptions)
    p.add_argument("--json", metavar="PATH", help="also write the result rows as JSON")
    p.set_defaults(func=run)


def run(args, store) -> int:
    from core.effects import effects, format_effects
    from core.jobs import CancelToken
    from core.validate import (
        check_results_path,
        check_spec,
        format_summary,
        load_results,
        run_validation,
        summarize,
        write_results_json,
    )
    from core.validation_spec import make_spec

    opts = from_args(ValidateOptions, args)
    if opts.sweep and args.json:  # said, rather than ignored: a sweep writes no results file
        from core.errors import InputError

        raise InputError(
            "--json writes one validation's results; a sweep's ranked table is printed and shown "
            "on the Validate page — drop --json, or validate one setting without --sweep"
        )
    if opts.sweep:
        return _sweep(store, opts)
    spec = make_spec(opts)
    check_spec(store, spec)
    if args.json:
        check_results_path(store, args.json)
    cancel = CancelToken().install()
    print(f"validation {spec.validation_id}: {len(spec.arms())} arms", file=sys.stderr)
    outcome = run_validation(store, spec, cancel=cancel, on_event=_print_event)
    results = load_results(store, outcome.validation_id)
    if args.json:
        write_results_json(args.json, results)
    print(format_summary(summarize(results)))
    table = effects(store, outcome.validation_id, by_group=True)
    if not table.empty:
        print(
            "\nEach arm against its random arm, bits/token, paired by seed (95% bootstrap "
            "interval over seeds and evaluation documents):"
        )
        print(format_effects(table))
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


def _sweep(store, opts) -> int:
    """`validate --sweep`: the grid within its time budget, the ranked table, the best one."""
    from core.jobs import CancelToken
    from core.sweep import (
        best_row,
        export_command,
        format_sweep,
        make_sweep,
        recommendation,
        run_sweep,
        sweep_table,
    )

    sweep = make_sweep(store, opts)
    cancel = CancelToken().install()
    print(
        f"{sweep.sweep_id}: {len(sweep.specs)} configurations, {sweep.minutes:g} minutes",
        file=sys.stderr,
    )

    def show(event) -> None:
        if event.arm is None:
            spec = event.spec
            within = f" within each {spec.stratify}" if spec.stratify else ""
            print(
                f"configuration {event.index}/{event.n_total}: {spec.rule} "
                f"{sum(spec.ratios[0]):g} by {spec.score}{within} ({spec.validation_id})",
                file=sys.stderr,
            )
        else:
            _print_event(event.arm)

    outcome = run_sweep(store, sweep, cancel=cancel, on_event=show)
    table = sweep_table(store, sweep.sweep_id)
    print(format_sweep(table))
    print()
    print(recommendation(table))
    best = best_row(table)
    if best is not None:
        print(f"export it: {export_command(store, best, opts.run)}")
    if outcome.status != "done":
        print(
            f"{sweep.sweep_id}: {outcome.n_done} of {outcome.n_total} configurations done "
            f"({outcome.status}); run the same command again to continue",
            file=sys.stderr,
        )
    return 130 if outcome.status == "cancelled" else 0
