"""`infoprune runs` lists scoring runs; `infoprune cancel RUN` stops one."""

from __future__ import annotations


def register(sub, parents) -> None:
    p = sub.add_parser("runs", parents=parents, help="list scoring runs")
    p.add_argument("--dataset", metavar="NAME")
    p.set_defaults(func=run_list)
    c = sub.add_parser("cancel", parents=parents, help="stop a scoring run (resumable)")
    c.add_argument("run", metavar="RUN")
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
    from core.scoring import cancel_run, get_run

    if cancel_run(store, args.run):
        print(f"asked run {args.run} to stop; it commits its current chunk first")
        return 0
    print(f"run {args.run} is not running (status: {get_run(store, args.run)['status']})")
    return 1
