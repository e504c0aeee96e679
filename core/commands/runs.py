"""`infoprune runs` lists scoring runs; `infoprune cancel ID` stops a run, probe or validation."""

from __future__ import annotations


def register(sub, parents) -> None:
    p = sub.add_parser("runs", parents=parents, help="list scoring runs")
    p.add_argument("--dataset", metavar="NAME")
    p.set_defaults(func=run_list)
    c = sub.add_parser(
        "cancel",
        parents=parents,
        help="stop a scoring run, probe training or validation (each resumes where it stopped)",
    )
    c.add_argument("run", metavar="ID", help="run-…, probe-… or val-… id")
    c.set_defaults(func=run_cancel)


def run_list(args, store) -> int:
    from core.scoring import list_runs

    df = list_runs(store, args.dataset)
    if df.empty:
        print("no runs yet — start one with: infoprune score --dataset NAME --model MODEL")
        return 0
    cols = ["run_id", "dataset", "model", "status", "n_done", "n_total", "tokens_per_s", "seconds"]
    print(df[cols].to_string(index=False))
    return 0


def run_cancel(args, store) -> int:
    ident = args.run
    if ident.startswith("probe-"):
        from core.probe import cancel_probe

        asked, what = cancel_probe(store, ident), "probe training"
    elif ident.startswith("val-"):
        from core.validate import cancel_validation

        asked, what = cancel_validation(store, ident), "validation"
    else:
        from core.scoring import cancel_run

        asked, what = cancel_run(store, ident), "run"
    if asked:
        print(f"asked {what} {ident} to stop; it saves its progress first")
        return 0
    print(f"{what} {ident} is not running")
    return 1
