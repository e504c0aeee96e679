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

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core import jobs
from core.datasets import DatasetChanged, change_since, texts_by_id
from core.effects import HELDOUT, TARGET
from core.errors import InputError, first_line
from core.jobs import CancelToken, job_for_ref, read_log_tail, start_job
from core.store import Store
from core.train_options import Budget
from core.training import document_bits, encode, pooled_bits, train_lm, train_tokenizer
from core.validation_spec import (
    RANDOM_PARTNER,
    SPLIT_SEED,
    Spec,
    arm_steps,
    matched_random,
    packed_rows,
    seeded_order,
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
    "target_bits_per_token",
    "target_bits_per_byte",
)

MAX_REUSED_VOCAB = 16384  # a larger vocabulary would make the tiny model mostly embedding
MIN_POOL_DOCS = 10


def check_spec(store: Store, spec: Spec) -> dict:
    """Everything a user can get wrong, before any work: the run and the score. Returns the run."""
    from core.groups import GroupBy, load_groups
    from core.prune import check_run_current, check_score

    run = check_run_current(store, spec.run_id)
    check_score(store, spec.run_id, spec.score)
    for column in {spec.stratify, spec.group_by} - {None}:
        load_groups(store, run["dataset"], GroupBy.parse(column), top=None)
    if spec.eval_dataset:
        _target_rows(store, spec, run)
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

    def evaluate(self, model, tokenizer, texts) -> list[tuple[float, int, int]]:
        """(bits, tokens, bytes) of each of TEXTS, as `document_bits` measures them."""
        return document_bits(model, tokenizer, texts)


@dataclass
class EvalSet:
    """One evaluation set: its texts, their sample ids and their group (for per-group bits)."""

    texts: list[str]
    sample_ids: list[str]
    groups: list[str | None]


@dataclass
class Pool:
    """What every arm of a validation shares, and so does every configuration of a sweep: the
    evaluation sets, the training pool tokenised once, and the tokenizer."""

    eval_sets: dict[str, EvalSet]  # HELDOUT, and TARGET with --eval-dataset
    pool_texts: list[str]
    pool_tokens: list[int]
    pool_row_idx: list[int]  # samples.row_idx of each pool text
    tokenizer: object
    info: dict


@dataclass
class _Data:
    pool: Pool
    kept: dict[tuple[str, float | None], list[int]]  # (arm, ratio) -> pool positions kept


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
    pool: Pool | None = None,
) -> Outcome:
    """Train every arm of SPEC not yet in the store (resuming a stopped validation). A sweep
    passes the POOL its configurations share (`prepare_pool`)."""
    run = check_spec(store, spec)
    vid = spec.validation_id
    arms = spec.arms()
    _claim(store, spec, run, len(arms))
    job = _Job(store, spec, run, cancel or CancelToken(), on_event, trainer or Trainer())
    try:
        status = _train_arms(job, arms, pool)
    except BaseException as exc:
        _finish(store, vid, "failed", first_line(exc))
        raise
    _finish(store, vid, status)
    if status == "done":
        shutil.rmtree(work_dir(store, vid), ignore_errors=True)
    return Outcome(vid, status, result_rows(load_results(store, vid)))


def _train_arms(job: _Job, arms, pool: Pool | None) -> str:
    store, spec = job.store, job.spec
    vid = spec.validation_id
    done = set(_done_keys(store, vid))
    for seed in {seed for arm, _, seed in arms if arm == "full"}:
        if ("full", None, seed) not in done and _reuse_full_arm(store, spec, seed):
            done.add(("full", None, seed))  # trained by another validation of the same pool
    todo = [key for key in arms if key not in done]
    for i, (arm, ratio, seed) in enumerate(arms, 1):
        if (arm, ratio, seed) in done:
            job.emit(ArmEvent(i, len(arms), arm, ratio, seed, skipped=True))
    if not todo:
        return "done"
    pool = pool or prepare_pool(store, spec, job.run)
    data = _Data(pool, kept_sets(store, spec, pool))
    _record_info(store, vid, pool.info, pool.eval_sets)
    s = spec.settings
    config = s.config()
    full_rows = packed_rows(pool.pool_tokens, s.seq_len)
    for i, (arm, ratio, seed) in enumerate(arms, 1):
        if (arm, ratio, seed) in done:
            continue
        if job.cancel.cancelled:
            return "cancelled"
        positions = _arm_positions(data, arm, ratio, seed)
        tokens = [pool.pool_tokens[p] for p in positions]
        steps = arm_steps(spec, packed_rows(tokens, s.seq_len), full_rows)

        def progress(p, i=i, arm=arm, ratio=ratio, seed=seed):
            job.emit(ArmEvent(i, len(arms), arm, ratio, seed, p.step, p.total_steps or 0))

        start = time.monotonic()
        model, stats = job.trainer.train(
            pool.tokenizer,
            [pool.pool_texts[p] for p in positions],
            pool.eval_sets[HELDOUT].texts,
            config,
            Budget(steps=steps),
            seed,
            job.cancel,
            progress,
        )
        if stats.status != "done":
            return "cancelled"
        docs = {
            name: job.trainer.evaluate(model, pool.tokenizer, eval_set.texts)
            for name, eval_set in pool.eval_sets.items()
        }
        bpt, bpb = pooled_bits(docs[HELDOUT])
        target = pooled_bits(docs[TARGET]) if TARGET in docs else (None, None)
        row = {
            "arm": arm,
            "ratio": ratio,
            "seed": seed,
            "val_bits_per_token": bpt,
            "val_bits_per_byte": bpb,
            "train_tokens": stats.train_tokens,
            "steps": stats.steps,
            "seconds": time.monotonic() - start,
            "target_bits_per_token": target[0],
            "target_bits_per_byte": target[1],
        }
        _insert_result(store, vid, row, docs)
        job.emit(ArmEvent(i, len(arms), arm, ratio, seed, steps, steps, result=row))
    return "done"


def _arm_positions(data: _Data, arm: str, ratio: float | None, seed: int) -> list[int]:
    tokens = data.pool.pool_tokens
    if arm == "full":
        return list(range(len(tokens)))
    if (arm, ratio) in data.kept:
        return data.kept[(arm, ratio)]
    partner = next(a for a, r in RANDOM_PARTNER.items() if r == arm)
    target = sum(tokens[p] for p in data.kept[(partner, ratio)])
    # Seeded by (seed, ratio): each ratio's random arm is its own draw, the same on every resume.
    draw = seed * 1_000_003 + round((ratio or 0.0) * 1e6) + (0 if arm == "random" else len(arm))
    return matched_random(tokens, target, draw)


def _reuse_full_arm(store: Store, spec: Spec, seed: int) -> bool:
    """Copy SEED's full arm (result and document bits) from another validation of the very same
    pool, evaluation sets and training (`Spec.pool_key`): it trained on exactly the same data."""
    vid = spec.validation_id
    with store.transaction() as con:
        found = con.execute(
            "SELECT r.validation_id FROM validation_results r JOIN validations v "
            "USING (validation_id) WHERE r.arm = 'full' AND r.seed = ? AND r.validation_id <> ? "
            "AND json_extract_string(v.settings, '$.pool_key') = ? "
            "AND EXISTS (SELECT 1 FROM validation_doc_bits b WHERE b.validation_id = "
            "r.validation_id AND b.arm = 'full' AND b.seed = ?) LIMIT 1",
            [seed, vid, spec.pool_key, seed],
        ).fetchall()
        if not found:
            return False
        source = found[0][0]
        columns = ", ".join(RESULT_KEYS)
        con.execute(
            f"INSERT INTO validation_results (validation_id, {columns}) SELECT ?, {columns} "
            "FROM validation_results WHERE validation_id = ? AND arm = 'full' AND seed = ?",
            [vid, source, seed],
        )
        con.execute(
            "INSERT INTO validation_doc_bits SELECT ?, eval_set, arm, ratio, seed, doc, bits, "
            "tokens, n_bytes FROM validation_doc_bits WHERE validation_id = ? AND arm = 'full' "
            "AND seed = ?",
            [vid, source, seed],
        )
        con.execute(
            "UPDATE validations SET n_done = (SELECT count(*) FROM validation_results "
            "WHERE validation_id = ?), updated_at = now() WHERE validation_id = ?",
            [vid, vid],
        )
    return True


def kept_sets(store: Store, spec: Spec, pool: Pool) -> dict[tuple[str, float | None], list[int]]:
    """(arm, ratio) -> the positions in POOL that the arm's rule keeps: the rule applied to the
    whole run, exactly as an export would, then met with the pool."""
    from core.prune import load_ranking, load_rule_inputs, select, selected_row_idx

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
        kept[key] = [k for k, r in enumerate(pool.pool_row_idx) if r in kept_rows]
    return kept


def prepare_pool(store: Store, spec: Spec, run: dict) -> Pool:
    """The evaluation sets, the training pool (tokenised once) and the tokenizer of SPEC."""
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
    target = _choose_target(store, spec, run) if spec.eval_dataset else None
    if target is not None and spec.eval_dataset == run["dataset"]:
        reserved = set(target)  # the target is never in the pool nor the held-out set
        rows = [r for r in rows if r[1] not in reserved]
    row_idx = [r[0] for r in rows]
    ids = [r[1] for r in rows]
    seen = _probe_seen(store, run)
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
    in_pool = {_text_hash(t) for t in pool_texts}
    by = _report_by(store, spec, run["dataset"])
    eval_ids = [ids[p] for p in eval_pos]
    eval_sets = {
        HELDOUT: EvalSet(
            eval_texts, eval_ids, _labels_of(store, run["dataset"], by, eval_ids, required=True)
        )
    }
    info = {
        "group_by": by,
        "heldout_texts_in_pool": sum(_text_hash(t) in in_pool for t in eval_texts),
    }
    if target is not None:
        eval_sets[TARGET], info[f"{TARGET}_excluded_in_pool"] = _target_set(
            store, spec, target, in_pool, by
        )
    tokenizer, source = _tokenizer(store, spec, run, pool_texts)
    pool_tokens = [len(t) for t in encode(tokenizer, pool_texts)]
    info |= {
        "tokenizer": source,
        "eval_samples": len(eval_pos),
        "eval_text_bytes": sum(len(t.encode("utf-8")) for t in eval_texts),
        "pool_samples": len(pool_pos),
        "pool_tokens": sum(pool_tokens),
        "probe_samples_excluded": len(seen),
    }
    if TARGET in eval_sets:
        info[f"{TARGET}_samples"] = len(eval_sets[TARGET].texts)
        info[f"{TARGET}_text_bytes"] = sum(len(t.encode("utf-8")) for t in eval_sets[TARGET].texts)
    pool_rows = [row_idx[p] for p in pool_pos]
    return Pool(eval_sets, pool_texts, pool_tokens, pool_rows, tokenizer, info)


def _probe_seen(store: Store, run: dict) -> set[str]:
    """Sample ids the run's model trained or validated on: never evaluated on."""
    return {
        r[0]
        for r in store.query(
            "SELECT sample_id FROM probe_samples WHERE model_hash = ? AND fingerprint = ?",
            [run["model_hash"], run["fingerprint"]],
        )
    }


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _report_by(store: Store, spec: Spec, dataset: str) -> str | None:
    """The column per-group bits are reported by: --group-by, else the stratify column, else
    `source` when the dataset has it."""
    from core.groups import group_options

    if spec.group_by or spec.stratify:
        return spec.group_by or spec.stratify
    return "source" if "source" in {str(o) for o in group_options(store, dataset)} else None


def _labels_of(
    store: Store, dataset: str, by: str | None, sample_ids: list[str], required: bool = False
) -> list:
    """The group label of each of SAMPLE_IDS of DATASET under BY; all None without BY, or when
    the dataset lacks the column and it is not REQUIRED (a target dataset)."""
    from core.groups import GroupBy, load_groups

    if by is None:
        return [None] * len(sample_ids)
    try:
        groups = load_groups(store, dataset, GroupBy.parse(by))
    except InputError:
        if required:
            raise
        return [None] * len(sample_ids)
    rows = dict(store.query("SELECT sample_id, row_idx FROM samples WHERE dataset = ?", [dataset]))
    return list(groups.label_of_rows(np.array([rows[i] for i in sample_ids], dtype=np.int64)))


def _target_rows(store: Store, spec: Spec, run: dict) -> tuple[list[int], list[str], list[int]]:
    """(row_idx, sample_id, n_bytes) of the --eval-dataset samples that --eval-filter picks."""
    from core.datasets import get_dataset
    from core.groups import GroupBy, load_groups

    try:
        get_dataset(store, spec.eval_dataset)
    except InputError as exc:
        raise InputError(f"--eval-dataset: {exc}", ui=f"Target dataset: {exc}") from None
    rows = store.query(
        "SELECT row_idx, sample_id, n_bytes FROM samples WHERE dataset = ? ORDER BY row_idx",
        [spec.eval_dataset],
    )
    if spec.target_filter is not None:
        column, value = spec.target_filter
        groups = load_groups(store, spec.eval_dataset, GroupBy.parse(column), top=None)
        if value not in groups.labels:
            shown = ", ".join(sorted(groups.labels)[:20])
            raise InputError(
                f"--eval-filter: no sample of '{spec.eval_dataset}' has {column}={value}; its "
                f"values are: {shown}",
                ui=f"No sample has {column} = {value}; its values are: {shown}",
            )
        code = groups.labels.index(value)
        rows = [r for r in rows if groups.codes[r[0]] == code]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _choose_target(store: Store, spec: Spec, run: dict) -> list[str]:
    """Sample ids of the target set: the samples --eval-filter picks, in seeded order, up to
    the held-out set's byte budget (the others stay eligible for the pool). The run's probe
    never trained on them when the target is the run's own dataset."""
    _, ids, n_bytes = _target_rows(store, spec, run)
    seen = _probe_seen(store, run) if spec.eval_dataset == run["dataset"] else set()
    chosen, got = [], 0
    for p in seeded_order(ids, SPLIT_SEED):
        if got >= spec.settings.eval_bytes:
            break
        if ids[p] not in seen:
            chosen.append(ids[p])
            got += n_bytes[p]
    return chosen


def _target_set(store: Store, spec: Spec, chosen: list[str], in_pool: set[str], by: str | None):
    """(the target EvalSet, how many of its texts were left out for being in the pool)."""
    from core.datasets import get_dataset

    fingerprint = get_dataset(store, spec.eval_dataset).fingerprint
    texts = texts_by_id(store, spec.eval_dataset, chosen, fingerprint)
    keep = [k for k, t in enumerate(texts) if _text_hash(t) not in in_pool]
    excluded = len(texts) - len(keep)
    texts, chosen = [texts[k] for k in keep], [chosen[k] for k in keep]
    if not chosen:
        raise InputError(
            f"the target set is empty: every selected text of '{spec.eval_dataset}' is also in "
            "the training pool — choose another dataset or filter",
            ui="Every text of the target is also in the training pool — choose another target.",
        )
    labels = _labels_of(store, spec.eval_dataset, by, chosen)
    return EvalSet(texts, chosen, labels), excluded


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
            **spec.extras(),
            "pool_key": spec.pool_key,
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


def _record_info(store: Store, vid: str, info: dict, eval_sets: dict[str, EvalSet]) -> None:
    """Add what the data turned out to be (pool and evaluation sizes, tokenizer) to the settings,
    and the evaluation documents with their groups."""
    with store.transaction() as con:
        con.execute("DELETE FROM validation_eval_docs WHERE validation_id = ?", [vid])
        for name, eval_set in eval_sets.items():
            con.executemany(
                "INSERT INTO validation_eval_docs VALUES (?, ?, ?, ?, ?)",
                [
                    [vid, name, k, sid, grp]
                    for k, (sid, grp) in enumerate(
                        zip(eval_set.sample_ids, eval_set.groups, strict=True)
                    )
                ],
            )
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


def _insert_result(store: Store, vid: str, row: dict, docs: dict[str, list]) -> None:
    """One finished arm: its result row and each evaluation document's bits, together."""
    with store.transaction() as con:
        for name, per_doc in docs.items():
            con.executemany(
                "INSERT INTO validation_doc_bits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [vid, name, row["arm"], row["ratio"], row["seed"], k, *d]
                    for k, d in enumerate(per_doc)
                ],
            )
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
    cols += ["train_tokens", "steps", "minus_random", "target_bpt_mean"]
    if results.empty:
        return pd.DataFrame(columns=cols)
    df = results.assign(ratio=results["ratio"].astype(float).fillna(-1.0))
    if "target_bits_per_token" not in df:  # rows written before target sets existed
        df["target_bits_per_token"] = np.nan
    g = df.groupby(["arm", "ratio"], sort=False)
    out = g.agg(
        seeds=("seed", "nunique"),
        bpt_mean=("val_bits_per_token", "mean"),
        bpt_std=("val_bits_per_token", "std"),
        bpb_mean=("val_bits_per_byte", "mean"),
        bpb_std=("val_bits_per_byte", "std"),
        train_tokens=("train_tokens", "mean"),
        steps=("steps", "mean"),
        target_bpt_mean=("target_bits_per_token", "mean"),
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
                **{
                    k: None if r.get(k) is None or pd.isna(r[k]) else float(r[k])
                    for k in ("target_bits_per_token", "target_bits_per_byte")
                },
            }
        )
    return rows


def check_results_path(store: Store, path: str | os.PathLike) -> Path:
    """PATH as a place `--json` may write, checked before any arm trains: never the store's own
    files, a folder, or an existing file other than an earlier results file (which a re-run,
    resuming, replaces)."""
    path = Path(path).expanduser()
    store.refuse_own_path(path)
    if path.is_dir():
        raise InputError(f"--json {path} is a folder — give a file name")
    if path.exists() or path.is_symlink():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            earlier = None
        if not (isinstance(earlier, dict) and isinstance(earlier.get("results"), list)):
            raise InputError(
                f"--json {path} exists and is not an earlier results file of `infoprune "
                "validate --json` — choose a new name"
            )
    return path


def write_results_json(path: str | Path, results: pd.DataFrame) -> None:
    """`{"results": [...]}`, one row per finished arm (see `result_rows`), written atomically."""
    from core.scratch import write_text_atomically

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps({"results": result_rows(results)}, indent=1) + "\n")


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
    if jobs.is_live(store, jobs.VALIDATIONS, validation_id):  # a second click, another tab
        raise InputError(f"validation {validation_id} is already running — watch it below")
    start_job(store, "validate", json.loads(rows[0][0])["argv"], ref=validation_id)
    return validation_id


def cancel_validation(store: Store, validation_id: str) -> bool:
    """Ask the process running a validation to stop (the arm in training is dropped)."""
    return jobs.cancel(store, jobs.VALIDATIONS, validation_id)


def validation_log(store: Store, validation_id: str, n_lines: int = 6) -> str:
    """The last lines the validation's latest background job printed."""
    job = job_for_ref(store, validation_id)
    return read_log_tail(job["log_path"], n_lines) if job else ""
