"""A sweep: many rule configurations validated on one shared pool, ranked, with a recommendation.

The grid is rules × ratios × stratified or not × the run's scores. Each configuration is an
ordinary validation (one ratio), so its arms, effects and resume work as for any other; what a
sweep adds is sharing: the pool is read and tokenised once for all of them, and the full arm of a
seed is trained once and reused by every configuration (`Spec.pool_key`). Configurations run in
order of usefulness (the middle ratio first, every rule and score at it, then the others) until the
time budget is spent; running the sweep again continues where it stopped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd

from core.effects import HELDOUT, TARGET, effects
from core.errors import InputError
from core.jobs import CancelToken
from core.rule_names import RULES
from core.store import Store
from core.validate import (
    ArmEvent,
    Trainer,
    available_scores,
    check_spec,
    dataset_of,
    load_results,
    prepare_pool,
    run_validation,
)
from core.validation_spec import DEFAULT_SCORE, ValidateOptions, make_spec, parse_ratios

SWEEP_SCORES = ("bits_per_token", "combined", "word_entropy", "gzip_bits_per_byte")
DEFAULT_MINUTES, QUICK_MINUTES = 30.0, 5.0
FIRST_ARM_GUESS = 60.0  # seconds per arm before one has been timed on this machine
BETTER = "better than random"


@dataclass(frozen=True)
class Sweep:
    """The configurations of a sweep, in the order they run (each an ordinary validation Spec)."""

    run_id: str
    specs: tuple  # of core.validation_spec.Spec
    minutes: float

    @property
    def sweep_id(self) -> str:
        blob = json.dumps([s.validation_id for s in self.specs])
        return "sweep-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def make_sweep(store: Store, opts: ValidateOptions) -> Sweep:
    """The grid OPTS asks for: --rule (else every rule) × --ratios × whole dataset and --stratify
    (else `source` when the dataset has it) × --score (else every stored score of SWEEP_SCORES)."""
    from core.groups import group_options

    rules = [opts.rule] if opts.rule else list(RULES)
    available = available_scores(store, opts.run)
    if opts.score != DEFAULT_SCORE:
        scores = [opts.score]
    else:
        scores = [s for s in SWEEP_SCORES if s in available]
    if not scores:
        raise InputError(f"run {opts.run} holds none of the scores a sweep ranks by")
    column = opts.stratify
    if column is None:
        names = {str(o) for o in group_options(store, dataset_of(store, opts.run))}
        column = "source" if "source" in names else None
    strata = [None, column] if column else [None]
    ratios = {rule: parse_ratios(rule, opts.ratios) for rule in rules}
    order = _ratio_order(len(next(iter(ratios.values()))))
    specs = []
    for k, rule, score, stratify in itertools.product(order, rules, scores, strata):
        pair = ratios[rule][k]
        text = f"{pair[0]:g}:{pair[1]:g}" if rule == "keep-middle" else f"{sum(pair):g}"
        config = replace(
            opts, rule=rule, ratios=text, score=score, stratify=stratify, sweep=False, minutes=None
        )
        specs.append(make_spec(config))
    if opts.seeds is None:  # breadth over depth: one seed unless asked
        specs = [replace(s, seeds=1) for s in specs]
    minutes = opts.minutes or (QUICK_MINUTES if opts.quick else DEFAULT_MINUTES)
    if minutes <= 0:
        raise InputError("--minutes must be more than 0")
    return Sweep(opts.run, tuple(specs), float(minutes))


def _ratio_order(n: int) -> list[int]:
    """Indexes of N ratios, the middle one first, then outwards (0.2, 0.1, 0.3 of 0.1,0.2,0.3)."""
    middle = (n - 1) / 2
    return sorted(range(n), key=lambda i: (abs(i - middle), i))


@dataclass
class SweepEvent:
    """Progress: configuration INDEX of N_TOTAL started (with its spec) or an arm of it."""

    index: int
    n_total: int
    spec: object
    arm: ArmEvent | None = None


@dataclass
class SweepOutcome:
    sweep_id: str
    status: str  # done | out of time | cancelled
    n_done: int
    n_total: int


def run_sweep(
    store: Store,
    sweep: Sweep,
    cancel: CancelToken | None = None,
    on_event: Callable[[SweepEvent], None] | None = None,
    trainer: Trainer | None = None,
) -> SweepOutcome:
    """Validate the configurations of SWEEP in order, within its time budget (resumable)."""
    cancel = cancel or CancelToken()
    run = check_spec(store, sweep.specs[0])
    _record(store, sweep)
    start = time.monotonic()
    pool = None
    n = len(sweep.specs)
    for i, spec in enumerate(sweep.specs, 1):
        if _is_done(store, spec):
            continue
        if cancel.cancelled:
            return SweepOutcome(sweep.sweep_id, "cancelled", i - 1, n)
        remaining = sweep.minutes * 60 - (time.monotonic() - start)
        if remaining < _expected_seconds(store, spec):
            return SweepOutcome(sweep.sweep_id, "out of time", _n_done(store, sweep), n)
        if on_event:
            on_event(SweepEvent(i, n, spec))
        pool = pool or prepare_pool(store, spec, run)

        def forward(event, i=i, spec=spec):
            if on_event:
                on_event(SweepEvent(i, n, spec, event))

        outcome = run_validation(store, spec, cancel, forward, trainer, pool=pool)
        if outcome.status != "done":
            return SweepOutcome(sweep.sweep_id, outcome.status, _n_done(store, sweep), n)
    return SweepOutcome(sweep.sweep_id, "done", n, n)


def _is_done(store: Store, spec) -> bool:
    rows = store.query(
        "SELECT status FROM validations WHERE validation_id = ?", [spec.validation_id]
    )
    return bool(rows) and rows[0][0] == "done"


def _n_done(store: Store, sweep: Sweep) -> int:
    return sum(_is_done(store, s) for s in sweep.specs)


def _expected_seconds(store: Store, spec) -> float:
    """How long SPEC's arms still to train should take: the mean seconds of the arms trained with
    the same settings so far (a first guess before any)."""
    rows = store.query(
        "SELECT avg(r.seconds) FROM validation_results r JOIN validations v USING (validation_id) "
        "WHERE json_extract_string(v.settings, '$.pool_key') = ?",
        [spec.pool_key],
    )
    per_arm = rows[0][0] if rows and rows[0][0] is not None else FIRST_ARM_GUESS
    done = len(load_results(store, spec.validation_id))
    full_done = _full_arms_available(store, spec)
    todo = len(spec.arms()) - done - full_done
    return max(todo, 0) * float(per_arm)


def _full_arms_available(store: Store, spec) -> int:
    """Full arms of SPEC not yet in it that another validation of the same pool can lend."""
    rows = store.query(
        "SELECT count(DISTINCT r.seed) FROM validation_results r JOIN validations v "
        "USING (validation_id) WHERE r.arm = 'full' AND r.seed < ? AND r.validation_id <> ? "
        "AND json_extract_string(v.settings, '$.pool_key') = ? AND r.seed NOT IN "
        "(SELECT seed FROM validation_results WHERE validation_id = ? AND arm = 'full')",
        [spec.seeds, spec.validation_id, spec.pool_key, spec.validation_id],
    )
    return int(rows[0][0] or 0)


def _record(store: Store, sweep: Sweep) -> None:
    """The sweep's row: its configurations in order (validation ids), so it can be listed."""
    configs = [
        {
            "validation_id": s.validation_id,
            "rule": s.rule,
            "ratio": round(sum(s.ratios[0]), 10),
            "low": s.ratios[0][0],
            "high": s.ratios[0][1],
            "score": s.score,
            "stratify": s.stratify,
        }
        for s in sweep.specs
    ]
    first = sweep.specs[0]
    settings = {
        "minutes": sweep.minutes,
        "seeds": first.seeds,
        "quick": first.quick,
        **first.extras(),
        "argv": sweep_argv(sweep),
    }
    with store.transaction() as con:
        con.execute("DELETE FROM sweeps WHERE sweep_id = ?", [sweep.sweep_id])
        con.execute(
            "INSERT INTO sweeps (sweep_id, run_id, configs, settings, created_at) "
            "VALUES (?, ?, ?, ?, now())",
            [sweep.sweep_id, sweep.run_id, json.dumps(configs), json.dumps(settings)],
        )


def start_sweep_job(store: Store, sweep: Sweep) -> str:
    """Check SWEEP, then run `infoprune validate --sweep` in the background; its id."""
    from core.jobs import start_job

    check_spec(store, sweep.specs[0])
    _record(store, sweep)  # listed at once, before the process has started
    start_job(store, "validate", sweep_argv(sweep), ref=sweep.sweep_id)
    return sweep.sweep_id


def sweep_log(store: Store, sweep_id: str, n_lines: int = 2) -> str:
    """The last lines the sweep's latest background job printed."""
    from core.jobs import job_for_ref, read_log_tail

    job = job_for_ref(store, sweep_id)
    return read_log_tail(job["log_path"], n_lines) if job else ""


def sweep_argv(sweep: Sweep) -> list[str]:
    """The `infoprune validate --sweep` command that runs (or continues) SWEEP."""
    first = sweep.specs[0]
    argv = ["validate", "--run", sweep.run_id, "--sweep", "--minutes", f"{sweep.minutes:g}"]
    rules = sorted({s.rule for s in sweep.specs})
    if len(rules) == 1:
        argv += ["--rule", rules[0]]
    scores = sorted({s.score for s in sweep.specs})
    if len(scores) == 1 and scores[0] != DEFAULT_SCORE:
        argv += ["--score", scores[0]]
    strata = {s.stratify for s in sweep.specs} - {None}
    if strata:
        argv += ["--stratify", strata.pop()]
    argv += ["--ratios", _ratios_text(sweep), "--seeds", str(first.seeds)]
    if first.quick:
        argv.append("--quick")
    for flag, value in (
        ("--eval-dataset", first.eval_dataset),
        ("--eval-filter", first.eval_filter),
        ("--group-by", first.group_by),
        ("--dedup", first.dedup),
        ("--size", first.settings.size),
        ("--budget", first.budget),
    ):
        if value:
            argv += [flag, value]
    return argv


def _ratios_text(sweep: Sweep) -> str:
    shares = sorted({round(sum(s.ratios[0]), 10) for s in sweep.specs})
    return ",".join(f"{r:g}" for r in shares)


# ---- what a sweep found -------------------------------------------------------------------------

TABLE_COLUMNS = [
    "rank",
    "rule",
    "ratio",
    "score",
    "stratify",
    "status",
    "seeds",
    "heldout",
    "heldout_low",
    "heldout_high",
    "heldout_verdict",
    "target",
    "target_low",
    "target_high",
    "target_verdict",
    "seconds",
    "validation_id",
]


def list_sweeps(store: Store, run_id: str | None = None) -> pd.DataFrame:
    """Sweeps newest first, with how many of their configurations are done."""
    df = store.query_df(
        "SELECT sweep_id, run_id, configs, settings, created_at FROM sweeps "
        + ("WHERE run_id = ? " if run_id else "")
        + "ORDER BY created_at DESC",
        [run_id] if run_id else [],
    )
    df["configs"] = [json.loads(c) for c in df["configs"]]
    df["settings"] = [json.loads(s) for s in df["settings"]]
    done = {
        r[0] for r in store.query("SELECT validation_id FROM validations WHERE status = 'done'")
    }
    df["n_total"] = [len(c) for c in df["configs"]]
    df["n_done"] = [sum(x["validation_id"] in done for x in c) for c in df["configs"]]
    return df


def sweep_table(store: Store, sweep_id: str) -> pd.DataFrame:
    """One row per configuration: its effect against random (± 95 % interval, verdict) on the
    held-out and the target set, ranked best first by the target when there is one (else the
    held-out set); configurations without results last."""
    sweeps = list_sweeps(store)
    found = sweeps[sweeps["sweep_id"] == sweep_id]
    if found.empty:
        raise InputError(f"unknown sweep '{sweep_id}'")
    status = dict(store.query("SELECT validation_id, status FROM validations"))
    rows = []
    for config in found.iloc[0]["configs"]:
        vid = config["validation_id"]
        row = {k: config[k] for k in ("rule", "ratio", "score", "stratify")}
        row |= {"validation_id": vid, "status": status.get(vid, "not run")}
        results = load_results(store, vid)
        row["seconds"] = float(results.loc[results["arm"] != "full", "seconds"].sum())
        row["seeds"] = int(results["seed"].nunique()) if not results.empty else 0
        table = effects(store, vid)
        for eval_set in (HELDOUT, TARGET):
            part = table[(table["eval_set"] == eval_set) & (table["arm"] == "pruned")]
            if part.empty:
                row |= {eval_set: None, f"{eval_set}_low": None, f"{eval_set}_high": None}
                row[f"{eval_set}_verdict"] = None
                continue
            best = part.iloc[0]
            row |= {
                eval_set: best["minus_random"],
                f"{eval_set}_low": best["ci_low"],
                f"{eval_set}_high": best["ci_high"],
                f"{eval_set}_verdict": best["verdict"],
            }
        rows.append(row)
    df = pd.DataFrame(rows)
    key = TARGET if df[TARGET].notna().any() else HELDOUT
    df = df.sort_values(key, na_position="last", kind="stable").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df[TABLE_COLUMNS]


def recommendation(table: pd.DataFrame) -> str:
    """The best configuration and its evidence, or a plain statement that nothing beat random.
    With a target set the best is better than random on it and not worse on the held-out set."""
    key = TARGET if table[TARGET].notna().any() else HELDOUT
    where = "the target set" if key == TARGET else "the held-out set"
    measured = table.dropna(subset=[key])
    if measured.empty:
        return "No configuration has finished yet."
    best = best_row(table)
    if best is None:
        also = " without being worse on the held-out set" if key == TARGET else ""
        return (
            f"Nothing beat random on {where}{also}: of {len(measured)} configurations none "
            "pruned better than a random subset with as many tokens (the closest, "
            f"{describe(measured.iloc[0])}, {measured.iloc[0][key]:+.4f} bits/token)."
        )
    caveat = (
        " With one seed the interval covers the evaluation documents only, not how training "
        "varies with the seed: confirm it with `infoprune validate --seeds 3` before relying on "
        "it."
        if best["seeds"] == 1
        else ""
    )
    return (
        f"Best on {where}: {describe(best)} — {best[key]:+.4f} bits/token against random "
        f"(95 % [{best[f'{key}_low']:+.4f}, {best[f'{key}_high']:+.4f}])"
        + (
            f"; on the held-out set {best[HELDOUT]:+.4f} ({best[f'{HELDOUT}_verdict']})"
            if key == TARGET and pd.notna(best[HELDOUT])
            else ""
        )
        + "."
        + caveat
    )


def best_row(table: pd.DataFrame):
    """The recommended configuration: the best ranked that is better than random on the
    ranking set (the target if there is one, and then not worse on the held-out set); None."""
    key = TARGET if table[TARGET].notna().any() else HELDOUT
    winners = table[table[f"{key}_verdict"] == BETTER]
    if key == TARGET:  # better on the target, and not at the cost of the rest of the data
        winners = winners[winners[f"{HELDOUT}_verdict"] != "worse than random"]
    return None if winners.empty else winners.iloc[0]


def describe(row) -> str:
    stratify = row["stratify"]
    within = f" within each {stratify}" if isinstance(stratify, str) and stratify else ""
    return f"{row['rule']} {row['ratio']:g} by {row['score']}{within}"


def _config(store: Store, row, run_id: str) -> dict:
    configs = {
        c["validation_id"]: c for sweep in list_sweeps(store, run_id)["configs"] for c in sweep
    }
    return configs[row["validation_id"]]


def sweep_preset(store: Store, row, run_id: str) -> dict:
    """A configuration of the table as the Prune page's controls take it."""
    config = _config(store, row, run_id)
    keys = ("rule", "score", "stratify", "low", "high")
    return {"run": run_id, **{k: config[k] for k in keys}}


def export_command(store: Store, row, run_id: str) -> str:
    """The `infoprune export` command that writes what a configuration keeps."""
    config = _config(store, row, run_id)
    parts = ["infoprune export", "--run", run_id, "--score", config["score"]]
    parts += ["--rule", config["rule"]]
    if config["rule"] == "keep-middle":
        parts += ["--ratio-low", f"{config['low']:g}", "--ratio-high", f"{config['high']:g}"]
    else:
        parts += ["--ratio", f"{config['ratio']:g}"]
    if config["stratify"]:
        parts += ["--stratify", config["stratify"]]
    parts += ["--format", "parquet", "--out", "curated.parquet"]
    return " ".join(parts)


def format_sweep(table: pd.DataFrame) -> str:
    """The ranked table as the CLI prints it."""

    def effect(row, key: str) -> str:
        if row[key] is None or pd.isna(row[key]):
            return f"{'':>33}"
        interval = f"[{row[f'{key}_low']:+.3f}, {row[f'{key}_high']:+.3f}]"
        verdict = {BETTER: "better", "worse than random": "worse"}.get(row[f"{key}_verdict"], "≈")
        return f"{row[key]:>+8.4f} {interval:>18} {verdict:>6}"

    has_target = table[TARGET].notna().any()
    head = f"{'#':>3} {'configuration':<60} {'held-out − random':>33}"
    head += f" {'target − random':>33}" if has_target else ""
    lines = [head + f" {'seconds':>8}"]
    for _, row in table.iterrows():
        line = f"{row['rank']:>3} {describe(row)[:60]:<60} {effect(row, HELDOUT)}"
        line += f" {effect(row, TARGET)}" if has_target else ""
        seconds = f"{row['seconds']:.0f}" if row["status"] != "not run" else row["status"]
        lines.append(line + f" {seconds:>8}")
    return "\n".join(lines)
