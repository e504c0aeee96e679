"""`infoprune datasets`: list what the store holds; `infoprune drop NAME` removes one."""

from __future__ import annotations


def register(sub, parents) -> None:
    p = sub.add_parser("datasets", parents=parents, help="list the datasets in the store")
    p.set_defaults(func=run_list)
    d = sub.add_parser("drop", parents=parents, help="delete a dataset (and its samples)")
    d.add_argument("name")
    d.set_defaults(func=run_drop)


def run_list(args, store) -> int:
    from core.datasets import list_datasets

    df = list_datasets(store)
    if df.empty:
        print(f"no datasets in {store.path} — add one with: infoprune ingest SOURCE --name NAME")
        return 0
    print(df.to_string(index=False))
    return 0


def run_drop(args, store) -> int:
    from core.datasets import drop_dataset

    drop_dataset(store, args.name)
    print(f"dropped dataset '{args.name}'")
    return 0
