"""Validating a pruning rule the way the paper does: retrain small models, compare held-out bits.

A held-out evaluation set is split off first: a seeded random sample of the run's dataset that the
probe never saw (neither its training nor its validation samples), never pruned, so it stays the
original distribution. The rest, capped in bytes, is the training pool. For each seed the same
small model (the probe's recipe, `core.training`) is trained from scratch on the whole pool
("full") and, for each ratio, on the part of the pool the rule keeps ("pruned") and on a random
part of the pool with as many tokens ("random"). The rule is applied to the whole run, exactly as an
export would (`core.prune`), and then intersected with the pool. What is validated is a `Spec`
(core/validation_spec.py).

A validation is identified by a hash of its configuration; each finished arm is committed as one
row of `validation_results`, so running the same command again skips what is done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from core import jobs
from core.datasets import DatasetChanged, change_since, texts_by_id
from core.errors import InputError, first_line
from core.jobs import CancelToken, job_for_ref, read_log_tail, start_job
from core.store import Store
from core.train_options import Budget
from core.training import encode, evaluate_bits, train_lm, train_tokenizer
from core.validation_spec import (
    RANDOM_PARTNER,
    SPLIT_SEED,
    Spec,
    arm_steps,
    matched_random,
    packed_rows,
    split_eval_pool,
)

ARMS = ("full", "pruned", "random", "dedup", "dedup-random", "dedup+pruned", "dedup+random")
RESULT_KEYS = (
    "arm",
    "ratio",
    "seed",
    "val_bits_per_token",
    "val_bits_per_byte",
    "train_tokens",
    "steps",
    "seconds",
)
MAX_REUSED_VOCAB = 16384  # a larger vocabulary would make the tiny model mostly embedding
MIN_POOL_DOCS = 10


def check_spec(store: Store, spec: Spec) -> dict:
    """Everything a user can get wrong, before any work: the run and the score. Returns the run."""
    from core.prune import check_run_current, check_score

    run = check_run_current(store, spec.run_id)
    check_score(store, spec.run_id, spec.score)
    return run


# ---- running a validation ---------------------------------------------------------------------


@dataclass
class ArmEvent:
    """Progress of one arm: STEP of TOTAL_STEPS, or finished with its result row."""

    index: int  # 1-based among all arms
    n_total: int
    arm: str
    ratio: float | None
    seed: int
    step: int = 0
    total_steps: int = 0
    result: dict | None = None
    skipped: bool = False


@dataclass
class Outcome:
    validation_id: str
    status: str  # done | cancelled
    results: list[dict] = field(default_factory=list)


class Trainer:
    """Trains and evaluates an arm with `core.training`; a test passes one that records its data."""

    def train(self, tokenizer, texts, eval_texts, config, budget, seed, cancel, on_progress):
        """(model, TrainStats) as `train_lm` returns them."""
        return train_lm(
            tokenizer,
            texts,
            eval_texts,
            config,
            budget,
            seed=seed,
            cancel=cancel,
            on_progress=on_progress,
        )

    def evaluate(self, model, tokenizer, texts) -> tuple[float, float]:
        """(bits per token, bits per byte) of TEXTS, as `evaluate_bits` measures them."""
        return evaluate_bits(model, tokenizer, texts)


@dataclass
class _Data:
    eval_texts: list[str]
    pool_texts: list[str]
    pool_tokens: list[int]
    kept: dict[tuple[str, float | None], list[int]]  # (arm, ratio) -> pool positions kept
    tokenizer: object
    info: dict


@dataclass
class _Job:
    """One process's work on a validation: what it trains, with what, and whom it tells."""

    store: Store
    spec: Spec
    run: dict
    cancel: CancelToken
    on_event: Callable[[ArmEvent], None] | None
    trainer: Trainer

    def emit(self, event: ArmEvent) -> None:
        if self.on_event:
            self.on_event(event)


def run_validation(
    store: Store,
    spec: Spec,
    cancel: CancelToken | None = None,
    on_event: Callable[[ArmEvent], None] | None = None,
    trainer: Trainer | None = None,
) -> Outcome:
    """Train every arm of SPEC not yet in the store (resuming a stopped validation)."""
    run = check_spec(store, spec)
    vid = spec.validation_id
    arms = spec.arms()
    _claim(store, spec, run, len(arms))
    job = _Job(store, spec, run, cancel or CancelToken(), on_event, trainer or Trainer())
    try:
        status = _train_arms(job, arms)
    except BaseException as exc:
        _finish(store, vid, "failed", first_line(exc))
        raise
    _finish(store, vid, status)
    if status == "done":
        shutil.rmtree(work_dir(store, vid), ignore_errors=True)
    return Outcome(vid, status, result_rows(load_results(store, vid)))


def _train_arms(job: _Job, arms) -> str:
    store, spec = job.store, job.spec
    vid = spec.validation_id
    done = set(_done_keys(store, vid))
    todo = [key for key in arms if key not in done]
    for i, (arm, ratio, seed) in enumerate(arms, 1):
        if (arm, ratio, seed) in done:
            job.emit(ArmEvent(i, len(arms), arm, ratio, seed, skipped=True))
    if not todo:
        return "done"
    data = _prepare_data(store, spec, job.run)
    _record_info(store, vid, data.info)
    s = spec.settings
    config = s.config()
    full_rows = packed_rows(data.pool_tokens, s.seq_len)
    for i, (arm, ratio, seed) in enumerate(arms, 1):
        if (arm, ratio, seed) in done:
            continue
        if job.cancel.cancelled:
            return "cancelled"
        positions = _arm_positions(data, arm, ratio, seed)
        tokens = [data.pool_tokens[p] for p in positions]
        steps = arm_steps(spec, packed_rows(tokens, s.seq_len), full_rows)

        def progress(p, i=i, arm=arm, ratio=ratio, seed=seed):
            job.emit(ArmEvent(i, len(arms), arm, ratio, seed, p.step, p.total_steps or 0))

        start = time.monotonic()
        model, stats = job.trainer.train(
            data.tokenizer,
            [data.pool_texts[p] for p in positions],
            data.eval_texts,
            config,
            Budget(steps=steps),
            seed,
            job.cancel,
            progress,
        )
        if stats.status != "done":
            return "cancelled"
        bpt, bpb = job.trainer.evaluate(model, data.tokenizer, data.eval_texts)
        row = {
            "arm": arm,
            "ratio": ratio,
            "seed": seed,
            "val_bits_per_token": bpt,
            "val_bits_per_byte": bpb,
            "train_tokens": stats.train_tokens,
            "steps": stats.steps,
            "seconds": time.monotonic() - start,
        }
        _insert_result(store, vid, row)
        job.emit(ArmEvent(i, len(arms), arm, ratio, seed, steps, steps, result=row))
    return "done"


def _arm_positions(data: _Data, arm: str, ratio: float | None, seed: int) -> list[int]:
    if arm == "full":
        return list(range(len(data.pool_texts)))
    if (arm, ratio) in data.kept:
        return data.kept[(arm, ratio)]
    partner = next(a for a, r in RANDOM_PARTNER.items() if r == arm)
    target = sum(data.pool_tokens[p] for p in data.kept[(partner, ratio)])
    # Seeded by (seed, ratio): each ratio's random arm is its own draw, the same on every resume.
    draw = seed * 1_000_003 + round((ratio or 0.0) * 1e6) + (0 if arm == "random" else len(arm))
    return matched_random(data.pool_tokens, target, draw)


def _prepare_data(store: Store, spec: Spec, run: dict) -> _Data:
    """The evaluation set, the pool, the kept part of the pool per ratio, and the tokenizer."""
    from core.prune import load_ranking, load_rule_inputs, select, selected_row_idx

    with store.connect() as con:
        change = change_since(con, run["dataset"], run["fingerprint"])
        if change:
            raise DatasetChanged(
                f"{change} since run {spec.run_id} scored it — score it again and validate that run"
            )
        rows = con.execute(
            "SELECT row_idx, sample_id, n_bytes FROM samples WHERE dataset = ? ORDER BY row_idx",
            [run["dataset"]],
        ).fetchall()
    row_idx = [r[0] for r in rows]
    ids = [r[1] for r in rows]
    seen = {
        r[0]
        for r in store.query(
            "SELECT sample_id FROM probe_samples WHERE model_hash = ? AND fingerprint = ?",
            [run["model_hash"], run["fingerprint"]],
        )
    }
    s = spec.settings
    eval_pos, pool_pos = split_eval_pool(
        ids, [r[2] for r in rows], seen, s.eval_bytes, s.pool_bytes
    )
    if not eval_pos or len(pool_pos) < MIN_POOL_DOCS:
        raise InputError(
            f"dataset '{run['dataset']}' is too small to validate on: {len(eval_pos)} evaluation "
            f"and {len(pool_pos)} training samples (need 1 and {MIN_POOL_DOCS}) — ingest more text"
        )
    wanted = [ids[p] for p in eval_pos + pool_pos]
    texts = texts_by_id(store, run["dataset"], wanted, run["fingerprint"])
    eval_texts, pool_texts = texts[: len(eval_pos)], texts[len(eval_pos) :]
    tokenizer, source = _tokenizer(store, spec, run, pool_texts)
    pool_tokens = [len(t) for t in encode(tokenizer, pool_texts)]

    ranking = load_ranking(store, spec.run_id, spec.score)
    wanted_rules = {}
    for pair, ratio in zip(spec.ratios, spec.ratio_values, strict=True):
        wanted_rules[("pruned", ratio)] = spec.arm_rule(pair)
        if spec.dedup:
            wanted_rules[("dedup+pruned", ratio)] = spec.arm_rule(pair, dedup=True)
    if spec.dedup:
        wanted_rules[("dedup", None)] = spec.arm_rule(None, dedup=True)
    kept: dict[tuple[str, float | None], list[int]] = {}
    for key, rule in wanted_rules.items():
        selection = select(ranking, rule, load_rule_inputs(store, ranking, rule))
        kept_rows = set(selected_row_idx(ranking, selection, "kept").tolist())
        kept[key] = [k for k, p in enumerate(pool_pos) if row_idx[p] in kept_rows]
    info = {
        "tokenizer": source,
        "eval_samples": len(eval_pos),
        "eval_text_bytes": sum(len(t.encode("utf-8")) for t in eval_texts),
        "pool_samples": len(pool_pos),
        "pool_tokens": sum(pool_tokens),
        "probe_samples_excluded": len(seen),
    }
    return _Data(eval_texts, pool_texts, pool_tokens, kept, tokenizer, info)


def _tokenizer(store: Store, spec: Spec, run: dict, pool_texts: list[str]):
    """(tokenizer, where it came from): the run's model tokenizer if it has a usable one, else one
    trained on the pool. Saved in the validation's work folder so a resume uses the very same."""
    from transformers import AutoTokenizer

    cache = work_dir(store, spec.validation_id) / "tokenizer"
    if (cache / "source.txt").exists():
        return AutoTokenizer.from_pretrained(cache), (cache / "source.txt").read_text()
    tokenizer = _run_tokenizer(run["model"])
    if tokenizer is not None:
        source = f"the run's model ({run['model']})"
    else:
        tokenizer = train_tokenizer(pool_texts, spec.settings.vocab)
        source = f"byte-level BPE ({spec.settings.vocab}) trained on the pool"
    cache.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(cache)
    (cache / "source.txt").write_text(source)
    return tokenizer, source


def _run_tokenizer(model: str):
    """The tokenizer of a local model directory, if it has an EOS and a modest vocabulary."""
    from transformers import AutoTokenizer

    from core.models import TOKENIZER_FILES, looks_like_path

    path = Path(model).expanduser()
    if not looks_like_path(model) or not path.is_dir():
        return None
    if not any((path / f).exists() for f in TOKENIZER_FILES):
        return None
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None or len(tokenizer) > MAX_REUSED_VOCAB:
        return None
    return tokenizer


def work_dir(store: Store, validation_id: str) -> Path:
    """The validation's folder beside the store (its tokenizer), removed when it is done."""
    from core.config import jobs_dir

    return jobs_dir(store.path) / "validations" / validation_id


# ---- the store ----------------------------------------------------------------------------------


def _claim(store: Store, spec: Spec, run: dict, n_total: int) -> None:
    """Create the validation's row, or take over a stopped one; refuse one that is running."""
    vid = spec.validation_id
    with store.transaction() as con:
        if jobs.claim(con, jobs.VALIDATIONS, vid):
            return
        me = jobs.owner()
        settings = {
            **asdict(spec.settings),
            "seeds": spec.seeds,
            "budget": spec.budget,
            "quick": spec.quick,
            "stratify": spec.stratify,
            "dedup": spec.dedup,
            "split_seed": SPLIT_SEED,
            "dataset": run["dataset"],
            "argv": spec.argv(),
        }
        ratios = [
            {"ratio": r, "low": lo, "high": hi}
            for (lo, hi), r in zip(spec.ratios, spec.ratio_values, strict=True)
        ]
        con.execute(
            "INSERT INTO validations (validation_id, run_id, score, rule, ratios, settings, "
            "status, n_done, n_total, pid, pid_start, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running', 0, ?, ?, ?, now(), now())",
            [
                vid,
                spec.run_id,
                spec.score,
                spec.rule,
                json.dumps(ratios),
                json.dumps(settings),
                n_total,
                me.pid,
                me.start,
            ],
        )


def _record_info(store: Store, vid: str, info: dict) -> None:
    """Add what the data turned out to be (pool and evaluation sizes, tokenizer) to the settings."""
    with store.transaction() as con:
        settings = json.loads(
            con.execute(
                "SELECT settings FROM validations WHERE validation_id = ?", [vid]
            ).fetchall()[0][0]
        )
        con.execute(
            "UPDATE validations SET settings = ?, updated_at = now() WHERE validation_id = ?",
            [json.dumps({**settings, **info}), vid],
        )


def _done_keys(store: Store, vid: str) -> list[tuple[str, float | None, int]]:
    rows = store.query(
        "SELECT arm, ratio, seed FROM validation_results WHERE validation_id = ?", [vid]
    )
    return [(a, None if r is None else round(r, 10), s) for a, r, s in rows]


def _insert_result(store: Store, vid: str, row: dict) -> None:
    with store.transaction() as con:
        con.execute(
            f"INSERT INTO validation_results (validation_id, {', '.join(RESULT_KEYS)}) "
            f"VALUES (?, {', '.join('?' for _ in RESULT_KEYS)})",
            [vid, *(row[k] for k in RESULT_KEYS)],
        )
        con.execute(
            "UPDATE validations SET n_done = (SELECT count(*) FROM validation_results "
            "WHERE validation_id = ?), updated_at = now() WHERE validation_id = ?",
            [vid, vid],
        )


def _finish(store: Store, vid: str, status: str, error: str | None = None) -> None:
    with store.transaction() as con:
        jobs.finish(con, jobs.VALIDATIONS, vid, status, error)


# ---- what the UI and CLI read -------------------------------------------------------------------


def list_validations(store: Store, run_id: str | None = None) -> pd.DataFrame:
    """Validations newest first, with live status: a 'running' one whose process is gone is
    'stopped'."""
    df = store.query_df(
        "SELECT validation_id, run_id, score, rule, ratios, settings, status, n_done, n_total, "
        "pid, pid_start, error, created_at, finished_at FROM validations "
        + ("WHERE run_id = ? " if run_id else "")
        + "ORDER BY created_at DESC",
        [run_id] if run_id else [],
    )
    jobs.with_live_status(df, jobs.VALIDATIONS)
    df["ratios"] = [
        ", ".join(
            f"{r['low']:g}:{r['high']:g}" if rule == "keep-middle" else f"{r['ratio']:g}"
            for r in json.loads(ratios)
        )
        for ratios, rule in zip(df["ratios"], df["rule"], strict=True)
    ]
    df["settings"] = [json.loads(s) for s in df["settings"]]
    return df


def load_results(store: Store, validation_id: str) -> pd.DataFrame:
    """One row per finished arm, with exactly the keys of RESULT_KEYS."""
    return store.query_df(
        f"SELECT {', '.join(RESULT_KEYS)} FROM validation_results WHERE validation_id = ? "
        "ORDER BY seed, CASE arm "
        + " ".join(f"WHEN '{a}' THEN {i}" for i, a in enumerate(ARMS))
        + " END, ratio",
        [validation_id],
    )


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (arm, ratio) (std is the sample std, 0 for one seed), and for
    pruned rows the mean paired difference pruned − random in bits per token."""
    cols = ["arm", "ratio", "seeds", "bpt_mean", "bpt_std", "bpb_mean", "bpb_std"]
    cols += ["train_tokens", "steps", "minus_random"]
    if results.empty:
        return pd.DataFrame(columns=cols)
    df = results.assign(ratio=results["ratio"].astype(float).fillna(-1.0))
    g = df.groupby(["arm", "ratio"], sort=False)
    out = g.agg(
        seeds=("seed", "nunique"),
        bpt_mean=("val_bits_per_token", "mean"),
        bpt_std=("val_bits_per_token", "std"),
        bpb_mean=("val_bits_per_byte", "mean"),
        bpb_std=("val_bits_per_byte", "std"),
        train_tokens=("train_tokens", "mean"),
        steps=("steps", "mean"),
    ).reset_index()
    out[["bpt_std", "bpb_std"]] = out[["bpt_std", "bpb_std"]].fillna(0.0)
    wide = df.pivot_table(index=["ratio", "seed"], columns="arm", values="val_bits_per_token")
    diffs = {}  # (arm, ratio) -> mean paired difference from its random partner
    for arm, partner in RANDOM_PARTNER.items():
        if {arm, partner} <= set(wide.columns):
            paired = (wide[arm] - wide[partner]).dropna()
            for r, d in paired.groupby(level="ratio").mean().items():
                diffs[(arm, r)] = d
    pairs = zip(out["arm"], out["ratio"], strict=True)
    out["minus_random"] = [diffs.get((a, r)) for a, r in pairs]
    out["arm_order"] = out["arm"].map({a: i for i, a in enumerate(ARMS)})
    out = out.sort_values(["ratio", "arm_order"]).reset_index(drop=True)
    out["ratio"] = out["ratio"].astype(object).where(out["ratio"] >= 0, None)
    return out[cols]


def format_summary(summary: pd.DataFrame) -> str:
    """The table the CLI prints at the end."""
    lines = [
        f"{'arm':<12} {'ratio':>5} {'seeds':>5} {'bits/token':>17} {'bits/byte':>17} "
        f"{'train tokens':>12} {'steps':>5} {'minus random':>13}"
    ]
    for r in summary.itertuples():
        ratio = "" if r.ratio is None or pd.isna(r.ratio) else f"{r.ratio:g}"
        diff = "" if r.minus_random is None or pd.isna(r.minus_random) else f"{r.minus_random:+.4f}"
        lines.append(
            f"{r.arm:<12} {ratio:>5} {r.seeds:>5} "
            f"{r.bpt_mean:>8.4f} ± {r.bpt_std:<6.4f} {r.bpb_mean:>8.4f} ± {r.bpb_std:<6.4f} "
            f"{r.train_tokens:>12,.0f} {r.steps:>5.0f} {diff:>13}"
        )
    return "\n".join(lines)


def result_rows(results: pd.DataFrame) -> list[dict]:
    """Result rows as plain Python values with exactly RESULT_KEYS (ratio None for full)."""
    rows = []
    for r in results.to_dict("records"):
        ratio = r["ratio"]
        rows.append(
            {
                "arm": r["arm"],
                "ratio": None if ratio is None or pd.isna(ratio) else float(ratio),
                "seed": int(r["seed"]),
                "val_bits_per_token": float(r["val_bits_per_token"]),
                "val_bits_per_byte": float(r["val_bits_per_byte"]),
                "train_tokens": int(r["train_tokens"]),
                "steps": int(r["steps"]),
                "seconds": float(r["seconds"]),
            }
        )
    return rows


def write_results_json(path: str | Path, results: pd.DataFrame) -> None:
    """`{"results": [...]}`, one row per finished arm (see `result_rows`), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"results": result_rows(results)}, indent=1) + "\n")
    os.replace(tmp, path)


def dataset_of(store: Store, run_id: str) -> str:
    """The dataset RUN scored (whose metadata columns a stratified rule can use)."""
    from core.scoring import get_run

    return get_run(store, run_id)["dataset"]


def available_scores(store: Store, run_id: str) -> list[str]:
    """Scores a rule can rank RUN by (those whose columns hold values in the run)."""
    from core.scores import score_columns, score_names
    from core.scoring import run_score_columns

    present = set(run_score_columns(store, run_id))
    return [s for s in score_names() if set(score_columns(s)) <= present]


def start_validation_job(store: Store, spec: Spec) -> str:
    """Check SPEC, then start `infoprune validate` in the background; returns the validation id."""
    check_spec(store, spec)
    if jobs.is_live(store, jobs.VALIDATIONS, spec.validation_id):
        raise InputError(f"validation {spec.validation_id} is already running — watch it below")
    start_job(store, "validate", spec.argv(), ref=spec.validation_id)
    return spec.validation_id


def resume_validation_job(store: Store, validation_id: str) -> str:
    """Start a stopped validation again with the command that created it."""
    rows = store.query("SELECT settings FROM validations WHERE validation_id = ?", [validation_id])
    if not rows:
        raise InputError(f"unknown validation '{validation_id}'")
    start_job(store, "validate", json.loads(rows[0][0])["argv"], ref=validation_id)
    return validation_id


def cancel_validation(store: Store, validation_id: str) -> bool:
    """Ask the process running a validation to stop (the arm in training is dropped)."""
    return jobs.cancel(store, jobs.VALIDATIONS, validation_id)


def validation_log(store: Store, validation_id: str, n_lines: int = 6) -> str:
    """The last lines the validation's latest background job printed."""
    job = job_for_ref(store, validation_id)
    return read_log_tail(job["log_path"], n_lines) if job else ""
