"""What a validation is asked to do: the `infoprune validate` options, presets, ratios and its Spec.

`ValidateOptions` is what a user types (the flags are generated from it); `make_spec` checks it and
resolves it into the `Spec` whose hash is the validation's id. The pure arithmetic of what each arm
trains on follows. Kept apart from core/validate.py (the store and the training) so that building
the CLI's parser imports no torch or pandas.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace

from core.errors import InputError
from core.options import option, to_argv
from core.rule_names import RULES
from core.train_options import SIZES, TrainConfig

BUDGETS = ("equal-steps", "equal-epochs")
DEDUP_MODES = ("exact", "near")
# Each arm a rule trains on, and the random arm with as many tokens it is compared with.
RANDOM_PARTNER = {"pruned": "random", "dedup": "dedup-random", "dedup+pruned": "dedup+random"}
ARM_SIZES = tuple(SIZES)[:2]  # the two smallest: a larger model would take hours per arm on a CPU
DEFAULT_SCORE = "bits_per_token"  # the same default as `infoprune export`
SPLIT_SEED = 0  # the evaluation set and the pool are the same for every seed: arms are paired


@dataclass(frozen=True)
class Settings:
    """Model and data sizes of every arm; `steps` is the full arm's number of optimiser steps.

    The pool is about `steps` batches of tokens, so the full arm sees it about once, and arms
    that keep less data repeat it (equal-steps) or stop earlier (equal-epochs).
    """

    size: str = "tiny"
    steps: int = 280
    seq_len: int = 128
    # Short CPU runs learn more per token (and per second) from small batches than the probe's 16.
    batch_size: int = 8
    vocab: int = 4096  # only when a tokenizer has to be trained
    pool_bytes: int = 900_000
    eval_bytes: int = 120_000

    def config(self) -> TrainConfig:
        """The training recipe of every arm (a few packed rows suffice for the curve)."""
        return TrainConfig(
            size=self.size,
            vocab=self.vocab,
            seq_len=self.seq_len,
            batch_size=self.batch_size,
            eval_rows=4,
        )


# Sized for a laptop CPU with the probe's 8192-token vocabulary (measured in docs/validation.md):
# --quick, one ratio and one seed, within 3 minutes; the default, 3 ratios x 3 seeds, within 30.
PRESETS = {
    "default": Settings(),
    "quick": Settings(steps=120, pool_bytes=400_000, eval_bytes=50_000),
}


@dataclass(frozen=True)
class ValidateOptions:
    """`infoprune validate` options as typed; `make_spec` checks them and fills in the defaults."""

    run: str = option(metavar="RUN", help="a finished scoring run")
    rule: str | None = option(
        None, choices=RULES, help="which samples the rule prunes (with --sweep: only this rule)"
    )
    ratios: str = option(
        "0.1,0.2,0.3",
        metavar="R,R,...",
        help="shares of samples to prune; keep-middle takes LOW:HIGH pairs (0.1:0.05), and a "
        "plain R there prunes R/2 from each end (default 0.1,0.2,0.3)",
    )
    score: str = option(DEFAULT_SCORE, help="score the rule ranks by")
    seeds: int | None = option(None, metavar="N", help="seeds per arm (default 3; 1 if --quick)")
    size: str = option("tiny", choices=ARM_SIZES, help="model size")
    budget: str = option(
        "equal-steps",
        choices=BUDGETS,
        help="every arm the same optimiser steps, or the same passes over its data",
    )
    quick: bool = option(False, help="a smaller pool and fewer steps (demos, tests)")
    stratify: str | None = option(
        None,
        metavar="COLUMN",
        help="apply the ratios within each value of a metadata column (COLUMN:domain for URLs), "
        "so the pruned arm keeps the mix of groups",
    )
    eval_dataset: str | None = option(
        None,
        metavar="NAME",
        help="also evaluate every arm on this dataset (or the part --eval-filter picks): the text "
        "you want the model to be good at; never pruned, never in the training pool",
    )
    eval_filter: str | None = option(
        None,
        metavar="COLUMN=VALUE",
        help="only the samples of --eval-dataset whose metadata COLUMN (COLUMN:domain for URLs) "
        "is VALUE",
    )
    group_by: str | None = option(
        None,
        metavar="COLUMN",
        help="report every arm's held-out bits per value of this metadata column (default: the "
        "--stratify column, else 'source' when the dataset has one)",
    )
    sweep: bool = option(
        False,
        help="validate a grid of configurations — every rule (or --rule) × --ratios × the whole "
        "dataset and within each --stratify column (default source) × every stored score (or "
        "--score) — within --minutes, ranked, with the best one; run again to continue",
    )
    minutes: float | None = option(
        None, metavar="M", help="the sweep's time budget (default 30; 5 with --quick)"
    )
    dedup: str | None = option(
        None,
        choices=DEDUP_MODES,
        help="also train on the pool without its exact or near duplicates ('dedup'), on that "
        "after the rule ('dedup+pruned'), and on random subsets with as many tokens as each",
    )


@dataclass(frozen=True)
class Spec:
    """Everything that determines a validation's numbers (its id is a hash of this)."""

    run_id: str
    score: str
    rule: str
    ratios: tuple[tuple[float, float], ...]  # (low, high) pruned share of each ratio
    seeds: int
    budget: str
    settings: Settings
    quick: bool = False
    stratify: str | None = None
    dedup: str | None = None
    eval_dataset: str | None = None
    eval_filter: str | None = None
    group_by: str | None = None

    @property
    def validation_id(self) -> str:
        modifiers = {k: v for k, v in self.extras().items() if v}
        blob = json.dumps(
            [self.run_id, self.score, self.rule, self.ratios, self.seeds, self.budget]
            + [asdict(self.settings)]
            + ([modifiers] if modifiers else []),  # the ids of plain validations stay as they were
            sort_keys=True,
        )
        return "val-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def ratio_values(self) -> list[float]:
        """The `ratio` of each result row: the total share of samples the rule prunes."""
        return [round(lo + hi, 10) for lo, hi in self.ratios]

    def arms(self) -> list[tuple[str, float | None, int]]:
        """(arm, ratio, seed) in training order: seed by seed, so early rows already compare."""
        out = []
        for seed in range(self.seeds):
            out.append(("full", None, seed))
            if self.dedup:
                out += [("dedup", None, seed), ("dedup-random", None, seed)]
            for r in self.ratio_values:
                out += [("pruned", r, seed), ("random", r, seed)]
                if self.dedup:
                    out += [("dedup+pruned", r, seed), ("dedup+random", r, seed)]
        return out

    @property
    def pool_key(self) -> str:
        """What the full arm depends on: the run, the sizes and training, the evaluation sets.
        Validations with the same key train their full arm on exactly the same data."""
        blob = json.dumps(
            [self.run_id, self.budget, asdict(self.settings), SPLIT_SEED]
            + [self.eval_dataset, self.eval_filter],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def extras(self) -> dict:
        """The options added after the first validations (in the id only when given)."""
        return {
            "stratify": self.stratify,
            "dedup": self.dedup,
            "eval_dataset": self.eval_dataset,
            "eval_filter": self.eval_filter,
            "group_by": self.group_by,
        }

    @property
    def target_filter(self) -> tuple[str, str] | None:
        """(column, value) of --eval-filter, or None."""
        if not self.eval_filter:
            return None
        column, _, value = self.eval_filter.partition("=")
        return column, value

    def arm_rule(self, pair: tuple[float, float] | None, dedup: bool = False):
        """The `core.rules.Rule` an arm keeps the samples of: the ratio PAIR (None: prune
        nothing by ratio), stratified as asked, deduplicating first with DEDUP."""
        return rule_for(
            self.rule,
            pair or (0.0, 0.0),
            stratify=self.stratify if pair else None,
            dedup=self.dedup if dedup else None,
        )

    def options(self) -> ValidateOptions:
        """The options that `make_spec` turns into this very spec."""
        return ValidateOptions(
            run=self.run_id,
            rule=self.rule,
            ratios=format_ratios(self.rule, self.ratios),
            score=self.score,
            seeds=self.seeds,
            size=self.settings.size,
            budget=self.budget,
            quick=self.quick,
            **self.extras(),
        )

    def argv(self) -> list[str]:
        """The `infoprune validate` command that rebuilds this spec."""
        return ["validate", *to_argv(self.options())]


def make_spec(opts: ValidateOptions) -> Spec:
    """The Spec of OPTS; --quick means one seed unless --seeds says otherwise."""
    if opts.rule is None:
        raise InputError(
            "--rule is required (or pass --sweep to try every rule)",
            ui="Choose a rule.",
        )
    if opts.budget not in BUDGETS:
        raise InputError(f"unknown budget '{opts.budget}' — use {' or '.join(BUDGETS)}")
    if opts.size not in ARM_SIZES:
        raise InputError(f"unknown size '{opts.size}' — use {' or '.join(ARM_SIZES)}")
    seeds = opts.seeds if opts.seeds is not None else (1 if opts.quick else 3)
    if seeds < 1:
        raise InputError("--seeds must be 1 or more")
    settings = replace(PRESETS["quick" if opts.quick else "default"], size=opts.size)
    ratios = parse_ratios(opts.rule, opts.ratios)
    if opts.dedup is not None and opts.dedup not in DEDUP_MODES:
        raise InputError(f"unknown dedup '{opts.dedup}' — use {' or '.join(DEDUP_MODES)}")
    spec = Spec(
        opts.run,
        opts.score,
        opts.rule,
        ratios,
        seeds,
        opts.budget,
        settings,
        opts.quick,
        stratify=opts.stratify or None,
        dedup=opts.dedup,
        eval_dataset=opts.eval_dataset or None,
        eval_filter=opts.eval_filter or None,
        group_by=opts.group_by or None,
    )
    if spec.eval_filter is not None:
        column, sep, _ = spec.eval_filter.partition("=")
        if not sep or not column.strip():
            raise InputError(
                f"--eval-filter '{spec.eval_filter}' is not COLUMN=VALUE (e.g. source=python-docs)",
                ui="“Only where” must read COLUMN=VALUE, e.g. source=python-docs.",
            )
        if spec.eval_dataset is None:
            raise InputError(
                "--eval-filter picks samples of --eval-dataset — pass --eval-dataset NAME too",
                ui="Choose the target dataset the filter applies to.",
            )
    spec.arm_rule(ratios[0], dedup=bool(spec.dedup))  # the rule's own checks of its modifiers
    return spec


def parse_ratios(rule: str, text: str) -> tuple[tuple[float, float], ...]:
    """Comma-separated ratios as (low, high) pruned shares.

    prune-low R prunes (R, 0) and prune-high R (0, R). keep-middle takes LOW:HIGH pairs, and a
    plain R means R/2 from each end. Every ratio prunes something and keeps something; ratios
    whose totals coincide cannot share one validation (the total is the x axis).
    """
    if rule not in RULES:
        raise InputError(f"unknown rule '{rule}'; rules are: {', '.join(RULES)}")
    out: list[tuple[float, float]] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            values = [float(v) for v in part.split(":")]
        except ValueError:
            raise InputError(f"ratio '{part}' is not a number (e.g. 0.1,0.2,0.3)") from None
        if len(values) == 2 and rule != "keep-middle":
            raise InputError(f"'{part}': LOW:HIGH pairs are for keep-middle; {rule} takes R")
        if len(values) > 2:
            raise InputError(f"ratio '{part}' has more than two parts — write LOW:HIGH")
        if len(values) == 1:
            r = values[0]
            pair = {"prune-low": (r, 0.0), "prune-high": (0.0, r)}.get(rule, (r / 2, r / 2))
        else:
            pair = (values[0], values[1])
        pair = (round(pair[0], 10), round(pair[1], 10))
        rule_for(rule, pair)  # the rule's own checks of each share
        if not 0 < sum(pair) < 1:
            raise InputError(
                f"ratio '{part}' must prune more than 0 and less than all of the samples"
            )
        out.append(pair)
    if not out:
        raise InputError(
            "--ratios is empty — pass e.g. 0.1,0.2,0.3",
            ui="“Ratios” is empty — give e.g. 0.1,0.2,0.3.",
        )
    totals = [round(sum(p), 10) for p in out]
    if len(set(totals)) < len(totals):
        raise InputError(
            f"ratios {text!r} prune the same total share twice — give each ratio once "
            "(compare splits of one total in separate validations)"
        )
    return tuple(out)


def rule_for(rule: str, pair: tuple[float, float], **modifiers):
    """The `core.rules.Rule` that prunes the (low, high) shares PAIR (with MODIFIERS: stratify,
    dedup)."""
    from core.rules import Rule

    if rule == "keep-middle":
        return Rule(rule, *pair, **modifiers)
    if rule == "prune-low":
        return Rule(rule, pair[0], None, **modifiers)
    return Rule(rule, None, pair[1], **modifiers)


def format_ratios(rule: str, ratios) -> str:
    if rule == "keep-middle":
        return ",".join(f"{lo:g}:{hi:g}" for lo, hi in ratios)
    return ",".join(f"{lo + hi:g}" for lo, hi in ratios)


# ---- pure selection helpers -------------------------------------------------------------------


def seeded_order(ids: list[str], seed: int) -> list[int]:
    """Positions of IDS in a seeded random order that depends on the ids only, not on row order."""
    keys = [hashlib.sha256(f"{seed}\x00{i}".encode()).digest() for i in ids]
    return sorted(range(len(ids)), key=keys.__getitem__)


def split_eval_pool(
    ids: list[str],
    n_bytes: list[int],
    excluded: set[str],
    eval_bytes: int,
    pool_bytes: int,
    seed: int = SPLIT_SEED,
) -> tuple[list[int], list[int]]:
    """(eval, pool) positions: disjoint, each filled in seeded order until its byte cap is reached.

    EXCLUDED samples (those the probe saw) never enter the evaluation set; they may be in the pool,
    since an export of the rule would contain them too.
    """
    order = seeded_order(ids, seed)
    eval_pos, pool_pos = [], []
    got = 0
    for p in order:
        if got >= eval_bytes:
            break
        if ids[p] not in excluded:
            eval_pos.append(p)
            got += n_bytes[p]
    taken = set(eval_pos)
    got = 0
    for p in order:
        if got >= pool_bytes:
            break
        if p not in taken:
            pool_pos.append(p)
            got += n_bytes[p]
    return eval_pos, pool_pos


def matched_random(n_tokens: list[int], target: int, seed: int) -> list[int]:
    """Indexes of a seeded random subset whose token count is within one document of TARGET.

    A greedy fill of a seeded permutation: the shortest prefix reaching TARGET, or one document
    less when that is closer.
    """
    import numpy as np

    perm = np.random.default_rng(seed).permutation(len(n_tokens))
    total = 0
    for k, i in enumerate(perm):
        if total + n_tokens[i] >= target:
            over = total + n_tokens[i] - target
            take = k + 1 if over <= target - total else k
            return sorted(int(j) for j in perm[:take])
        total += n_tokens[i]
    return sorted(int(j) for j in perm)


def packed_rows(n_tokens: list[int], seq_len: int) -> int:
    """Rows `core.training.pack_rows` makes of documents with these token counts."""
    stream = sum(n_tokens) + len(n_tokens)  # one EOS before each document
    return max(1, math.ceil((stream - 1) / seq_len))


def arm_steps(spec: Spec, rows: int, full_rows: int) -> int:
    """Optimiser steps of an arm: the full arm's under equal-steps, or as many passes under
    equal-epochs."""
    if spec.budget == "equal-steps":
        return spec.settings.steps
    return max(1, round(spec.settings.steps * rows / full_rows))
