"""`infoprune` command line: a thin layer over core/, one module per command in core/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from core import __version__
from core.errors import InputError, first_line

# OpenMP threads that wait for work spin for a long time before sleeping (libgomp: 300,000 spins).
# When another process wants the same cores, e.g. two jobs, or a job beside the app, both crawl;
# 10,000 spins let them share at a small cost alone (figures: docs/benchmarks.md, "Scoring beside
# other work"). Must be set before torch loads libgomp.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="PATH",
        help="workspace DuckDB file (default: $INFOPRUNE_DB, else ./workspace/infoprune.duckdb)",
    )
    parser = argparse.ArgumentParser(
        prog="infoprune",
        description="Measure how much information each text sample carries, prune, export.",
    )
    parser.add_argument("--version", action="version", version=f"infoprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import core.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"core.commands.{info.name}")
        module.register(sub, [common])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from core.store import Store

    store = Store(args.db)
    status, message = "failed", None
    try:
        store.sweep_temporaries()
        rc = int(args.func(args, store) or 0)
        status = {0: "done", 130: "cancelled"}.get(rc, "failed")
        return rc
    except InputError as exc:
        message = f"error: {exc}"
        print(message, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        status, message = "cancelled", "interrupted"
        print(message, file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line unless asked for the traceback
        message = f"internal error: {type(exc).__name__}: {first_line(exc)}"
        if os.environ.get("INFOPRUNE_DEBUG"):
            raise
        print(f"{message} (set INFOPRUNE_DEBUG=1 for details)", file=sys.stderr)
        return 1
    finally:
        _record_job_end(store, status, message)


def _record_job_end(store, status: str, message: str | None) -> None:
    """A background job writes how it ended into its `jobs` row (see core.jobs)."""
    from core.jobs import finish_job

    try:
        finish_job(store, status, message)
    except Exception as exc:  # the command's own outcome matters more than this bookkeeping
        print(f"warning: could not record how the job ended ({exc})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
