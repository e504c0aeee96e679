"""`infoprune export --run RUN --rule R ... --format F --out PATH`: write a pruned subset."""

from __future__ import annotations

import math

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
    p.add_argument("--part", default="kept", help="kept (default) or pruned")
    p.add_argument("--format", metavar="FMT", help="jsonl | parquet | hf (save_to_disk folder)")
    p.add_argument("--out", required=True, metavar="PATH", help="file (or folder for hf)")
    p.add_argument("--with-scores", action="store_true", help="add every stored score column")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PATH")
    p.add_argument("--from-manifest", metavar="M", help="rebuild the subset a manifest describes")
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


def run(args, store) -> int:
    from core.export import export_from_manifest, export_subset
    from core.rules import rule_from_args

    if args.from_manifest:
        given = [f"--{f.replace('_', '-')}" for f in _SELECTION_FLAGS if getattr(args, f)]
        if given or args.with_scores or args.part != "kept" or args.score != "bits_per_token":
            raise InputError(
                "--from-manifest takes only --out (and --overwrite): the manifest fixes the rest"
            )
        result = export_from_manifest(store, args.from_manifest, args.out, args.overwrite)
        print(result.line())
        return 0
    for flag in ("run", "rule", "format"):
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
    )
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
    )
    print(result.line())
    return 0
