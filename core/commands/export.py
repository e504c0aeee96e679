"""`infoprune export --run RUN --rule R ... --format F --out PATH`: write a pruned subset."""

from __future__ import annotations

import math
import os
from pathlib import Path

from core.errors import InputError
from core.rule_names import RULES

_SELECTION_FLAGS = (
    "run",
    "rule",
    "ratio",
    "ratio_low",
    "ratio_high",
    "threshold",
    "threshold_low",
    "threshold_high",
    "stratify",
    "group_ratio",
    "dedup",
    "format",
)


def register(sub, parents) -> None:
    p = sub.add_parser(
        "export",
        parents=parents,
        help="write the samples a pruning rule keeps (or prunes) as JSONL, Parquet or a HF dataset",
        description=(
            "Rank a run's samples by a score, apply a rule, and write the kept (or pruned) samples "
            "in source order with a PATH.manifest.json that can rebuild them exactly. Unscored "
            "samples are always kept."
        ),
    )
    p.add_argument("--run", help="scoring run id (see `infoprune runs`)")
    p.add_argument("--score", default="bits_per_token", help="score to rank by")
    p.add_argument("--rule", metavar="RULE", help=" | ".join(RULES))
    p.add_argument("--ratio", metavar="R", help="fraction to prune (prune-low, prune-high)")
    p.add_argument("--ratio-low", metavar="A", help="keep-middle: fraction pruned from the low end")
    p.add_argument("--ratio-high", metavar="B", help="keep-middle: fraction pruned from the top")
    p.add_argument("--threshold", metavar="T", help="instead of --ratio: prune below/above T")
    p.add_argument("--threshold-low", metavar="T", help="keep-middle: prune scores below T")
    p.add_argument("--threshold-high", metavar="T", help="keep-middle: prune scores above T")
    p.add_argument(
        "--stratify",
        metavar="COLUMN",
        help="apply the ratio(s) within each value of a metadata column (COLUMN:domain for a URL "
        "column), so the mix of groups is kept",
    )
    p.add_argument(
        "--group-ratio",
        metavar="GROUP=R",
        action="append",
        default=[],
        help="with --stratify: this group's ratio instead of the rule's (GROUP=LOW:HIGH for "
        "keep-middle; python-docs=0 keeps the whole group); repeat for more groups",
    )
    p.add_argument(
        "--dedup",
        choices=("exact", "near"),
        help="first keep one sample per exact-duplicate group or near-duplicate cluster (the "
        "smallest sample id), then apply the rule to the rest",
    )
    p.add_argument(
        "--part",
        default="kept",
        help="kept (default), pruned, or both: the kept samples to PATH, the pruned to PATH with "
        "-pruned before its extension (a -kept at the end of its name becomes -pruned)",
    )
    p.add_argument("--format", metavar="FMT", help="jsonl | parquet | hf (save_to_disk folder)")
    p.add_argument("--out", metavar="PATH", help="file (or folder for hf)")
    p.add_argument("--with-scores", action="store_true", help="add every stored score column")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PATH")
    p.add_argument(
        "--from-manifest",
        metavar="M",
        help="rebuild the subset a manifest describes (both files of a --part both export), "
        "from --db, else $INFOPRUNE_DB, else the store the manifest recorded",
    )
    p.add_argument(
        "--group-by",
        metavar="COLUMN",
        help="a metadata column (COLUMN:domain for a URL column): print what the rule prunes of "
        "each group, and record the per-group counts in the manifest",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the rule would keep and prune (per group with --group-by); write nothing",
    )
    p.set_defaults(func=run)


def _number(flag: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"--{flag} must be a number, got '{value}'") from None
    if not math.isfinite(number):
        raise InputError(f"--{flag} must be a finite number, got '{value}'")
    return number


def _manifest_store(args, store):
    """The store to rebuild from: --db or $INFOPRUNE_DB when given, else the store the manifest
    recorded while it exists, else the default one."""
    from core.config import ENV_DB
    from core.export import read_manifest
    from core.store import Store

    if args.db or os.environ.get(ENV_DB):
        return store
    recorded = read_manifest(args.from_manifest)["dataset"].get("store")
    if isinstance(recorded, str) and Path(recorded).is_file():
        return Store(recorded)
    if not store.path.exists():
        raise InputError(
            f"cannot rebuild {args.from_manifest}: its store "
            f"{recorded or '(not recorded)'} is gone and {store.path} does not exist — pass --db "
            "the store the export was made from"
        )
    return store


def run(args, store) -> int:
    from core.export import export_from_manifest, export_subset
    from core.groups import GroupBy
    from core.rules import rule_from_args

    if args.from_manifest and (args.dry_run or args.group_by):
        raise InputError("--from-manifest rebuilds an export; it takes no --dry-run or --group-by")
    if not args.out and not args.dry_run:
        raise InputError("--out PATH is required (or pass --dry-run to write nothing)")
    if args.from_manifest:
        given = [f"--{f.replace('_', '-')}" for f in _SELECTION_FLAGS if getattr(args, f)]
        if given or args.with_scores or args.part != "kept" or args.score != "bits_per_token":
            raise InputError(
                "--from-manifest takes only --out (and --overwrite, --db): the manifest fixes "
                "the rest"
            )
        store = _manifest_store(args, store)
        result = export_from_manifest(store, args.from_manifest, args.out, args.overwrite)
        print(f"{result.line()}; rebuilt from the store {store.path}")
        return 0
    for flag in ("run", "rule") if args.dry_run else ("run", "rule", "format"):
        if not getattr(args, flag):
            raise InputError(f"--{flag} is required (or pass --from-manifest M)")
    rule = rule_from_args(
        args.rule,
        **{
            f: _number(f.replace("_", "-"), getattr(args, f))
            for f in (
                "ratio",
                "ratio_low",
                "ratio_high",
                "threshold",
                "threshold_low",
                "threshold_high",
            )
        },
        stratify=args.stratify,
        group_ratios=args.group_ratio,
        dedup=args.dedup,
    )
    group_by = GroupBy.parse(args.group_by) if args.group_by else None
    if args.dry_run:
        print(_dry_run_report(store, args.run, args.score, rule, group_by))
        return 0
    result = export_subset(
        store,
        args.run,
        args.score,
        rule,
        args.out,
        fmt=args.format,
        part=args.part,
        with_scores=args.with_scores,
        overwrite=args.overwrite,
        group_by=group_by,
    )
    print(result.line())
    return 0


def _dry_run_report(store, run_id: str, score: str, rule, group_by) -> str:
    """What the rule keeps and prunes, in totals and with GROUP_BY per group; nothing written."""
    from core.groups import format_group_table, load_group_table
    from core.prune import rule_selection

    ranking, sel = rule_selection(store, run_id, score, rule)
    of_tokens = "of the scored samples' tokens" if sel.n_unscored else "of tokens"
    tokens = (  # an unscored sample has no token count: its tokens are in no total
        "no token counts"
        if sel.kept_tokens_share is None
        else f"{sel.kept_tokens_share:.1%} {of_tokens} kept"
    )
    line = (
        f"dry run, nothing written: {rule.describe()} by {score}: {sel.n_kept:,} of "
        f"{sel.n_total:,} samples kept ({sel.kept_share:.1%}), {sel.n_pruned:,} pruned, "
        f"{sel.n_unscored:,} unscored (kept); {sel.kept_bytes_share:.1%} of bytes kept, {tokens}"
    )
    if rule.dedup:
        line += f"; {sel.n_duplicates:,} of the pruned are {rule.dedup} duplicates"

    line += "\n" + _evidence_line(store, run_id, score, rule)
    if group_by is None:
        return line
    table = load_group_table(store, ranking, sel, group_by)
    return f"{line}\n\n{format_group_table(table, group_by)}"


def _evidence_line(store, run_id: str, score: str, rule) -> str:
    """What the validations of this run say about the rule (core/evidence.py), in one line."""
    from core.evidence import evidence_for

    found = evidence_for(store, run_id, score, rule)
    best = found.best
    if best is not None:
        return (
            f"validated ({best['validation_id']}, {best['eval_set']}, {best['seeds']} seeds): "
            f"{best['minus_random']:+.4f} bits/token against random, 95% "
            f"[{best['ci_low']:+.4f}, {best['ci_high']:+.4f}] — {best['verdict']}"
        )
    if not found.nearest.empty:
        near = ", ".join(
            f"{r.ratio:g}: {r.minus_random:+.4f} ({r.verdict})"
            for r in found.nearest.itertuples()
            if r.minus_random is not None
        )
        return f"not validated at this ratio; nearest validated ratios: {near}"
    return "not validated: `infoprune validate` this rule to see whether it beats a random subset"
