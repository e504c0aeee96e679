"""Validating a rule: the split, the arms, the JSON and store rows, resume, bad input, the page."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from core import processes, validate
from core.cli import main
from core.effects import effects
from core.errors import InputError
from core.ingest import ingest_dataset
from core.jobs import CancelToken
from core.prune import load_ranking, rule_selection, select, selected_row_idx
from core.rules import Rule
from core.scoring import ScoreOptions, score_dataset
from core.store import Store
from core.training import encode, pack_rows
from core.validation_spec import (
    PRESETS,
    Settings,
    Spec,
    ValidateOptions,
    arm_steps,
    make_spec,
    matched_random,
    packed_rows,
    parse_ratios,
    split_eval_pool,
)
from tests.conftest import ROOT, corpus_texts, write_jsonl

# Seconds, not minutes: a few steps of the tiny model on a small pool.
TEST_SETTINGS = Settings(
    size="tiny", steps=4, seq_len=32, batch_size=4, vocab=300, pool_bytes=30_000, eval_bytes=8_000
)
N_DOCS = 150
PROBE_TRAIN = 40  # samples marked as having trained the run's model


@pytest.fixture(scope="module", autouse=True)
def _small_presets():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "default", TEST_SETTINGS)
        mp.setitem(PRESETS, "quick", TEST_SETTINGS)
        yield


def spec_of(*args, **options) -> Spec:
    return make_spec(ValidateOptions(*args, **options))


class Recorder(validate.Trainer):
    """The real trainer, remembering what each arm trained and was evaluated on."""

    def __init__(self):
        self.trained: list[dict] = []
        self.evaluated: list[list[str]] = []

    def train(self, tokenizer, texts, eval_texts, config, budget, seed, cancel, on_progress):
        self.trained.append({"texts": list(texts), "steps": budget.steps, "seed": seed})
        args = (tokenizer, texts, eval_texts, config, budget, seed, cancel, on_progress)
        return super().train(*args)

    def evaluate(self, model, tokenizer, texts):
        self.evaluated.append(list(texts))
        return super().evaluate(model, tokenizer, texts)


def _build(tmp: Path, model: str) -> tuple[Store, str, list[dict]]:
    """A store with N_DOCS real documents scored by MODEL; with a model, the first PROBE_TRAIN are
    marked as its training samples."""
    store = Store(tmp / "ws.duckdb", lock_timeout=30)
    docs = [{"id": r["id"], "text": r["text"][:1500]} for r in corpus_texts(N_DOCS)]
    ingest_dataset(store, str(write_jsonl(tmp / "d.jsonl", docs)), "d", id_column="id")
    run_id = score_dataset(store, "d", ScoreOptions(model=model)).run_id
    run = store.query("SELECT model_hash, fingerprint FROM runs WHERE run_id = ?", [run_id])[0]
    with store.transaction() as con:
        for d in docs[: PROBE_TRAIN if run[0] else 0]:
            con.execute("INSERT INTO probe_samples VALUES (?, ?, ?, 'train')", [*run, d["id"]])
    return store, run_id, docs


@pytest.fixture(scope="module")
def done(tmp_path_factory, tiny_model_dir):
    """One finished validation, 2 seeds × (full + 2 ratios × pruned/random), then its CLI command,
    which finds every arm done and writes the JSON."""
    tmp = tmp_path_factory.mktemp("validate")
    store, run_id, docs = _build(tmp, str(tiny_model_dir))
    json_path = tmp / "out" / "results.json"
    spec = spec_of(run_id, "prune-low", "0.2,0.4", seeds=2)
    rec = Recorder()
    validate.run_validation(store, spec, trainer=rec)
    argv = ["validate", "--run", run_id, "--rule", "prune-low", "--ratios", "0.2,0.4"]
    argv += ["--seeds", "2", "--json", str(json_path), "--db", str(store.path)]
    rc = main(argv)
    return {
        "rc": rc,
        "store": store,
        "run_id": run_id,
        "docs": docs,
        "json": json_path,
        "rec": rec,
        "spec": spec,
        "argv": argv,
    }


# ---- pure parts -----------------------------------------------------------------------------


def test_split_is_disjoint_seeded_order_free_and_skips_probe_samples():
    rng = random.Random(3)
    ids = [f"doc{i}" for i in range(400)]
    n_bytes = [rng.randrange(10, 500) for _ in ids]
    excluded = set(ids[:150])
    ev, pool = split_eval_pool(ids, n_bytes, excluded, eval_bytes=5_000, pool_bytes=20_000)
    assert not set(ev) & set(pool)
    assert not {ids[p] for p in ev} & excluded
    assert {ids[p] for p in pool} & excluded  # the probe's samples may train arms
    # Each part fills to its cap and stops at the document that reaches it.
    assert 5_000 <= sum(n_bytes[p] for p in ev) < 5_000 + max(n_bytes)
    assert 20_000 <= sum(n_bytes[p] for p in pool) < 20_000 + max(n_bytes)
    # A function of the ids and seed only: shuffled rows give the same sets.
    order = list(range(400))
    random.Random(9).shuffle(order)
    ev2, pool2 = split_eval_pool(
        [ids[i] for i in order], [n_bytes[i] for i in order], excluded, 5_000, 20_000
    )
    assert {ids[order[p]] for p in ev2} == {ids[p] for p in ev}
    assert {ids[order[p]] for p in pool2} == {ids[p] for p in pool}
    other, _ = split_eval_pool(ids, n_bytes, excluded, 5_000, 20_000, seed=1)
    assert set(other) != set(ev)


def test_random_subset_matches_tokens_within_one_document():
    rng = random.Random(5)
    tokens = [rng.choice([3, 40, 200, 1500]) for _ in range(300)]
    for seed in range(40):
        target = rng.randrange(1, sum(tokens))
        picked = matched_random(tokens, target, seed)
        got = sum(tokens[i] for i in picked)
        assert len(set(picked)) == len(picked)
        # Within one document: the closer of the prefix that reaches the target and one less.
        assert abs(got - target) <= max(tokens) / 2
        assert matched_random(tokens, target, seed) == picked
    assert matched_random(tokens, 5000, 1) != matched_random(tokens, 5000, 2)
    assert matched_random(tokens, sum(tokens) + 10, 0) == list(range(300))
    assert len(matched_random([10] * 50, 123, 0)) == 12


def test_ratio_conventions():
    assert parse_ratios("prune-low", "0.1, 0.2,0.3") == ((0.1, 0), (0.2, 0), (0.3, 0))
    assert parse_ratios("prune-high", "0.25") == ((0, 0.25),)
    spec = spec_of("r", "keep-middle", "0.1:0.05,0.3")
    assert spec.ratios == ((0.1, 0.05), (0.15, 0.15))
    assert spec.ratio_values == [0.15, 0.3]
    assert "0.1:0.05,0.15:0.15" in spec.argv()
    assert spec_of("r", "prune-low", "0.2", quick=True).seeds == 1
    assert spec_of("r", "prune-low", "0.2").seeds == 3
    arms = spec_of("r", "prune-low", "0.1,0.2", seeds=2).arms()
    assert len(arms) == 2 * (1 + 2 * 2) and arms[0] == ("full", None, 0)


def test_spec_argv_is_the_cli_command_and_keeps_the_validation_id():
    from core.cli import build_parser
    from core.options import from_args

    for spec in (
        spec_of("run-1", "prune-low"),
        spec_of("run-1", "keep-middle", "0.1:0.05,0.3", score="word_entropy", seeds=2, quick=True),
    ):
        assert make_spec(from_args(ValidateOptions, build_parser().parse_args(spec.argv()))) == spec
    # Validations started before the options were declared once resume under the same id.
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "default", Settings())
        mp.setitem(PRESETS, "quick", Settings(steps=120, pool_bytes=400_000, eval_bytes=50_000))
        assert spec_of("run-1", "prune-low", "0.1,0.2,0.3").validation_id == "val-ef4185984e1f"
        other = spec_of(
            "run-1",
            "keep-middle",
            "0.1:0.05,0.3",
            score="word_entropy",
            seeds=2,
            size="small",
            budget="equal-epochs",
            quick=True,
        )
        assert other.validation_id == "val-213d7b766fc8"


def test_packed_rows_and_steps_per_budget():
    tok = [5, 70, 1, 300]
    seqs = [[1] * n for n in tok]
    assert packed_rows(tok, 32) == len(pack_rows(seqs, 32, 0)[0])
    steps = spec_of("r", "prune-low", "0.2").settings.steps
    epochs = spec_of("r", "prune-low", "0.2", budget="equal-epochs")
    assert arm_steps(epochs, 50, 100) == round(steps / 2)
    assert arm_steps(epochs, 100, 100) == steps
    assert arm_steps(spec_of("r", "prune-low", "0.2"), 50, 100) == steps


def test_summary_is_mean_and_sample_std_over_seeds_with_paired_difference():
    rows = []
    for seed, (full, pruned, random_) in enumerate([(5.0, 5.5, 5.2), (6.0, 6.1, 6.2)]):
        for arm, ratio, bpt in (
            ("full", None, full),
            ("pruned", 0.2, pruned),
            ("random", 0.2, random_),
        ):
            rows.append(
                dict(
                    arm=arm,
                    ratio=ratio,
                    seed=seed,
                    val_bits_per_token=bpt,
                    val_bits_per_byte=bpt / 4,
                    train_tokens=100,
                    steps=10,
                    seconds=1.0,
                )
            )
    s = validate.summarize(pd.DataFrame(rows))
    assert list(s["arm"]) == ["full", "pruned", "random"]
    assert s.loc[0, "ratio"] is None and s.loc[1, "ratio"] == 0.2
    assert s.loc[0, "bpt_mean"] == pytest.approx(5.5)
    assert s.loc[0, "bpt_std"] == pytest.approx(pd.Series([5.0, 6.0]).std())
    assert s.loc[1, "minus_random"] == pytest.approx(((5.5 - 5.2) + (6.1 - 6.2)) / 2)
    assert pd.isna(s.loc[2, "minus_random"])
    assert "minus random" in validate.format_summary(s)


# ---- a real validation ----------------------------------------------------------------------


def _argv_on_copy(done, tmp_path, json_path) -> tuple[list[str], Path]:
    """The fixture's command (every arm done) on a copy of its store, writing JSON_PATH."""
    import shutil

    db = tmp_path / "copy.duckdb"
    shutil.copy(done["store"].path, db)
    argv = list(done["argv"])
    argv[argv.index("--json") + 1] = str(json_path)
    argv[argv.index("--db") + 1] = str(db)
    return argv, db


def test_json_never_writes_over_the_store_or_a_file_it_did_not_write(done, tmp_path, capsys):
    argv, db = _argv_on_copy(done, tmp_path, tmp_path / "copy.duckdb")
    size = db.stat().st_size
    assert main(argv) == 2
    assert "would write over the store" in capsys.readouterr().err
    assert db.stat().st_size == size and Store(db).query("SELECT count(*) FROM runs")[0][0] == 1

    notes = tmp_path / "notes.json"
    notes.write_text("my notes\n")
    (tmp_path / "r.json.tmp").write_text("mine too\n")
    argv, _ = _argv_on_copy(done, tmp_path, notes)
    assert main(argv) == 2
    assert "is not an earlier results file" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n"

    (tmp_path / "folder").mkdir()
    argv, _ = _argv_on_copy(done, tmp_path, tmp_path / "folder")
    assert main(argv) == 2 and "is a folder" in capsys.readouterr().err

    results = tmp_path / "r.json"  # new, then again: an earlier results file is replaced
    argv, _ = _argv_on_copy(done, tmp_path, results)
    assert main(argv) == 0 and main(argv) == 0
    assert len(json.loads(results.read_text())["results"]) == 10
    assert (tmp_path / "r.json.tmp").read_text() == "mine too\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "copy.duckdb",
        "folder",
        "notes.json",
        "r.json",
        "r.json.tmp",
    ]


def test_cli_writes_json_and_store_rows(done, capsys):
    assert done["rc"] == 0
    data = json.loads(done["json"].read_text())
    assert list(data) == ["results"]
    rows = data["results"]
    assert len(rows) == 2 * (1 + 2 * 2)
    assert all(list(r) == list(validate.RESULT_KEYS) for r in rows)
    assert {(r["arm"], r["ratio"]) for r in rows} == {
        ("full", None),
        ("pruned", 0.2),
        ("random", 0.2),
        ("pruned", 0.4),
        ("random", 0.4),
    }
    assert sorted({r["seed"] for r in rows}) == [0, 1]
    for r in rows:
        assert 0 < r["val_bits_per_byte"] < r["val_bits_per_token"] < 20
        assert r["steps"] == TEST_SETTINGS.steps and r["train_tokens"] > 0 and r["seconds"] > 0
    stored = validate.load_results(done["store"], done["spec"].validation_id)
    assert validate.result_rows(stored) == rows
    v = validate.list_validations(done["store"], done["run_id"]).iloc[0]
    assert (v.status, v.n_done, v.n_total) == ("done", 10, 10)
    assert v.settings["tokenizer"].startswith("the run's model")
    assert v.settings["probe_samples_excluded"] == PROBE_TRAIN


def test_eval_set_never_trains_an_arm_and_skips_probe_samples(done):
    rec = done["rec"]
    assert len(rec.trained) == 10 and len(rec.evaluated) == 10
    eval_texts = set(rec.evaluated[0])
    assert all(set(e) == eval_texts for e in rec.evaluated)  # one fixed held-out set
    for call in rec.trained:
        assert not eval_texts & set(call["texts"])
    probe_texts = {d["text"] for d in done["docs"][:PROBE_TRAIN]}
    assert not eval_texts & probe_texts
    full_texts = set(rec.trained[0]["texts"])
    assert full_texts & probe_texts  # the pool is what an export would hold


def test_pruned_arm_is_the_exported_kept_set_within_the_pool(done):
    store, rec = done["store"], done["rec"]
    ranking = load_ranking(store, done["run_id"], "bits_per_token")
    text_of = dict(store.query("SELECT row_idx, text FROM samples"))
    for seed in (0, 1):
        full, *arms = [c["texts"] for c in rec.trained if c["seed"] == seed]
        for k, ratio in enumerate((0.2, 0.4)):
            selection = select(ranking, Rule("prune-low", ratio))
            kept = {text_of[i] for i in selected_row_idx(ranking, selection, "kept")}
            pruned, random_ = arms[2 * k], arms[2 * k + 1]
            assert pruned == [t for t in full if t in kept]
            assert set(random_) <= set(full) and random_ != pruned


def test_random_arm_has_the_pruned_arms_tokens_within_one_document(done, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = json.loads(done["json"].read_text())["results"]
    full = done["rec"].trained[0]["texts"]
    longest = max(len(ids) for ids in encode(tokenizer, full))
    for seed in (0, 1):
        for ratio in (0.2, 0.4):
            t = {
                r["arm"]: r["train_tokens"]
                for r in rows
                if r["seed"] == seed and r["ratio"] == ratio
            }
            assert t["random"] != 0 and abs(t["random"] - t["pruned"]) <= longest
            full_tokens = next(
                r["train_tokens"] for r in rows if r["arm"] == "full" and r["seed"] == seed
            )
            assert t["pruned"] < full_tokens


def test_equal_steps_and_equal_epochs(done):
    assert {c["steps"] for c in done["rec"].trained} == {TEST_SETTINGS.steps}
    store, run_id = done["store"], done["run_id"]
    spec = spec_of(run_id, "prune-low", "0.4", seeds=1, budget="equal-epochs")
    rec = Recorder()
    outcome = validate.run_validation(store, spec, trainer=rec)
    assert outcome.status == "done" and outcome.validation_id != done["spec"].validation_id
    steps = {r["arm"]: r["steps"] for r in outcome.results}
    assert steps["full"] == TEST_SETTINGS.steps
    assert steps["pruned"] == steps["random"] or abs(steps["pruned"] - steps["random"]) <= 1
    assert steps["pruned"] < steps["full"]
    full, pruned = rec.trained[0]["texts"], rec.trained[1]["texts"]
    assert len(pruned) < len(full)


def test_cancelled_validation_resumes_without_retraining_finished_arms(done):
    store, run_id = done["store"], done["run_id"]
    spec = spec_of(run_id, "prune-high", "0.3", seeds=2)
    cancel = CancelToken()

    def stop_after_first(event):
        if event.result is not None:
            cancel.cancel()

    first = Recorder()
    outcome = validate.run_validation(
        store, spec, cancel=cancel, on_event=stop_after_first, trainer=first
    )
    # Both full arms come from the finished validation of the same pool; one arm is trained.
    assert outcome.status == "cancelled" and len(first.trained) == 1
    assert [(r["arm"], r["seed"]) for r in outcome.results] == [
        ("full", 0),
        ("pruned", 0),
        ("full", 1),
    ]
    earlier = validate.result_rows(validate.load_results(store, done["spec"].validation_id))
    full = [r for r in earlier if r["arm"] == "full"]
    assert [r for r in outcome.results if r["arm"] == "full"] == full
    v = validate.list_validations(store, run_id).set_index("validation_id").loc[spec.validation_id]
    assert (v.status, v.n_done, v.n_total) == ("cancelled", 3, 6)

    rec = Recorder()
    assert validate.run_validation(store, spec, trainer=rec).status == "done"
    assert len(rec.trained) == 3
    results = validate.load_results(store, spec.validation_id)
    assert len(results) == 6 and not results.duplicated(["arm", "ratio", "seed"]).any()
    assert all(r in validate.result_rows(results) for r in outcome.results)

    # The same command again trains nothing: every row, its seconds included, stays as it was.
    assert main(spec.argv() + ["--db", str(store.path)]) == 0
    assert validate.load_results(store, spec.validation_id).equals(results)


def test_model_free_run_trains_a_tokenizer_on_the_pool(tmp_path):
    store, run_id, _ = _build(tmp_path, "none")
    spec = spec_of(run_id, "keep-middle", "0.1:0.2", score="word_entropy", seeds=1)
    rec = Recorder()
    outcome = validate.run_validation(store, spec, trainer=rec)
    assert outcome.status == "done" and [r["ratio"] for r in outcome.results] == [None, 0.3, 0.3]
    v = validate.list_validations(store, run_id).iloc[0]
    assert v.settings["tokenizer"] == "byte-level BPE (300) trained on the pool"
    assert not set(rec.evaluated[0]) & {t for c in rec.trained for t in c["texts"]}
    assert not validate.work_dir(store, spec.validation_id).exists()  # tidied when done


def test_stratified_validation_with_dedup_arms_trains_what_the_rules_keep(tmp_path):
    """--stratify source --dedup exact: the pruned arms are the stratified rule's kept samples
    within the pool, the dedup arms the pool without its copies, each with a matched random arm."""
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    docs = [{**r, "text": r["text"][:300]} for r in corpus_texts(N_DOCS)]
    docs += [{**d, "id": f"copy-{d['id']}"} for d in docs[:100]]  # short: copies in the pool
    ingest_dataset(store, str(write_jsonl(tmp_path / "d.jsonl", docs)), "d", id_column="id")
    run_id = score_dataset(store, "d", ScoreOptions(model="none")).run_id
    spec = spec_of(
        run_id,
        "prune-low",
        "0.3",
        score="word_entropy",
        seeds=1,
        stratify="source",
        dedup="exact",
    )
    assert spec.validation_id != spec_of(run_id, "prune-low", "0.3", seeds=1).validation_id
    rec = Recorder()
    outcome = validate.run_validation(store, spec, trainer=rec)
    arms = [(r["arm"], r["ratio"]) for r in outcome.results]
    assert arms == [
        ("full", None),
        ("pruned", 0.3),
        ("random", 0.3),
        ("dedup", None),
        ("dedup-random", None),
        ("dedup+pruned", 0.3),
        ("dedup+random", 0.3),
    ]
    full, dedup, dedup_random, pruned, random_, both, both_random = (
        c["texts"] for c in rec.trained
    )
    text_of = dict(store.query("SELECT row_idx, text FROM samples"))
    copied = {d["text"] for d in docs[:100]}  # which copy a rule keeps is by id: compare the rest

    def kept_texts(rule: Rule, arm: list[str]) -> tuple[list[str], list[str]]:
        ranking, selection = rule_selection(store, run_id, "word_entropy", rule)
        kept = {text_of[i] for i in selected_row_idx(ranking, selection, "kept")}
        expected = [t for t in full if t in kept and t not in copied]
        return [t for t in arm if t not in copied], expected

    stratified = Rule("prune-low", 0.3, stratify="source")
    assert len(set(full) - copied) > 10
    assert kept_texts(stratified, pruned)[0] == kept_texts(stratified, pruned)[1]
    deduped = replace(stratified, dedup="exact")
    assert kept_texts(deduped, both)[0] == kept_texts(deduped, both)[1]
    # No text twice; what has no copy stays. (A copy whose kept twin is not in the pool goes too:
    # the rule applies to the whole run, as an export would, then meets the pool.)
    assert len(dedup) == len(set(dedup)) < len(set(full)) < len(full)
    assert [t for t in full if t not in copied] == [t for t in dedup if t not in copied]
    assert len(both) < len(pruned)
    for arm, partner in ((random_, pruned), (dedup_random, dedup), (both_random, both)):
        assert set(arm) <= set(full) and arm != partner
    summary = validate.summarize(validate.load_results(store, outcome.validation_id))
    compared = summary.dropna(subset=["minus_random"])
    assert sorted(compared["arm"]) == ["dedup", "dedup+pruned", "pruned"]
    table = effects(store, outcome.validation_id, by_group=True, n_boot=200)
    overall = table[table["group"].isna()]
    assert sorted(overall["arm"]) == ["dedup", "dedup+pruned", "pruned"]
    assert set(table["group"].dropna()) <= {d["source"] for d in docs}
    for r in table.dropna(subset=["minus_random"]).itertuples():
        assert r.ci_low <= r.minus_random <= r.ci_high and r.detectable > 0
    v = validate.list_validations(store, run_id).iloc[0]
    assert v.settings["group_by"] == "source"  # the stratify column
    assert (v.settings["stratify"], v.settings["dedup"]) == ("source", "exact")
    assert "--stratify" in v.settings["argv"] and "--dedup" in v.settings["argv"]


def test_target_set_is_never_in_the_pool_and_is_reported_beside_the_held_out_set(tmp_path, capsys):
    """--eval-dataset d --eval-filter source=S: those samples leave the pool and the held-out set;
    another dataset's texts that the pool also holds are left out of the target and counted."""
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    docs = [{**r, "text": r["text"][:400]} for r in corpus_texts(N_DOCS)]
    ingest_dataset(store, str(write_jsonl(tmp_path / "d.jsonl", docs)), "d", id_column="id")
    run_id = score_dataset(store, "d", ScoreOptions(model="none")).run_id
    target_source = docs[0]["source"]
    spec = spec_of(
        run_id,
        "prune-low",
        "0.2",
        score="word_entropy",
        seeds=1,
        eval_dataset="d",
        eval_filter=f"source={target_source}",
    )
    rec = Recorder()
    outcome = validate.run_validation(store, spec, trainer=rec)
    targets = {d["text"] for d in docs if d["source"] == target_source}
    heldout, target = rec.evaluated[0], rec.evaluated[1]
    trained = {t for c in rec.trained for t in c["texts"]}
    # The target is held out of everything; other samples of its source may train.
    assert target and set(target) <= targets and not set(target) & (set(heldout) | trained)
    assert trained & (targets - set(target))
    assert all(r["target_bits_per_token"] > 0 for r in outcome.results)
    table = effects(store, outcome.validation_id, n_boot=100)
    assert sorted(table["eval_set"]) == ["heldout", "target"]

    # A second dataset, half of it copies of pool texts: the copies are not evaluated on.
    pool = [t for c in rec.trained[:1] for t in c["texts"]]
    other = [{"id": f"o{i}", "text": t} for i, t in enumerate(pool[:5])]
    other += [{"id": f"n{i}", "text": f"a new text number {i} " * 20} for i in range(5)]
    ingest_dataset(store, str(write_jsonl(tmp_path / "o.jsonl", other)), "o", id_column="id")
    argv = ["validate", "--run", run_id, "--rule", "prune-low", "--ratios", "0.2", "--seeds", "1"]
    argv += ["--score", "word_entropy", "--eval-dataset", "o", "--db", str(store.path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "target" in out and "heldout" in out and "interval" in out
    v = validate.list_validations(store, run_id).iloc[0]
    assert v.settings["target_excluded_in_pool"] == 5 and v.settings["target_samples"] == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eval_dataset": "nope"}, "--eval-dataset: unknown dataset 'nope'"),
        ({"eval_dataset": "d", "eval_filter": "source"}, "is not COLUMN=VALUE"),
        ({"eval_filter": "source=x"}, "pass --eval-dataset NAME too"),
        ({"eval_dataset": "d", "eval_filter": "id=nope"}, "no sample of 'd' has id=nope"),
        ({"stratify": "nope"}, "unknown metadata column 'nope'"),
        ({"group_by": "nope"}, "unknown metadata column 'nope'"),
    ],
)
def test_bad_target_and_group_options_are_refused_before_any_work(done, options, message):
    with pytest.raises(InputError, match=message):
        validate.check_spec(done["store"], spec_of(done["run_id"], "prune-low", "0.2", **options))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "run-nope"], "unknown run 'run-nope'"),
        (["--ratios", "1.5"], "between 0 and 1"),
        (["--ratios", "0"], "more than 0 and less than all"),
        (["--ratios", "0.1,abc"], "'abc' is not a number"),
        (["--ratios", "0.1:0.1"], "LOW:HIGH pairs are for keep-middle"),
        (["--ratios", "0.2,0.2"], "the same total share twice"),
        (["--rule", "keep-middle", "--ratios", "0.6:0.5"], "more than 1"),
        (["--score", "nonsense"], "unknown score 'nonsense'"),
        (["--score", "weighted:2"], "bad weighted score"),
        (["--seeds", "0"], "--seeds must be 1 or more"),
    ],
)
def test_bad_input_is_one_error_line(done, capsys, args, message):
    argv = ["validate", "--run", done["run_id"], "--rule", "prune-low", "--ratios", "0.2"]
    argv += ["--db", str(done["store"].path)]
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_a_sweep_with_json_is_refused_not_ignored(done, tmp_path, capsys):
    argv = ["validate", "--run", done["run_id"], "--sweep", "--json", str(tmp_path / "r.json")]
    capsys.readouterr()
    assert main([*argv, "--db", str(done["store"].path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop --json" in err[0] and not (tmp_path / "r.json").exists()


def test_score_without_values_in_the_run_is_refused(tmp_path, capsys):
    store, run_id, _ = _build(tmp_path, "none")
    argv = ["validate", "--run", run_id, "--rule", "prune-low", "--db", str(store.path)]
    assert main(argv) == 2  # a model-free run holds no bits_per_token
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no values for bits_per_token" in err[0]


def test_validate_page_shows_results_and_starts_a_job(done, monkeypatch):
    from streamlit.testing.v1 import AppTest

    started = []
    monkeypatch.setattr(validate, "start_job", lambda store, kind, argv, ref: started.append(argv))
    monkeypatch.setenv("INFOPRUNE_DB", str(done["store"].path))
    at = AppTest.from_file(str(ROOT / "pages" / "6_Validate.py"), default_timeout=60)
    at.session_state["current_validation"] = done["spec"].validation_id
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    summary = at.dataframe[0].value
    assert list(summary["arm"][:3]) == ["full", "pruned", "random"]
    assert len(summary) == 5 and set(summary["seeds"]) == {2}
    effects = at.dataframe[1].value  # each pruned arm against its random arm, with an interval
    assert list(effects["arm"]) == ["pruned", "pruned"] and set(effects["eval_set"]) == {"heldout"}
    assert (effects["ci_low"] <= effects["ci_high"]).all() and effects["verdict"].notna().all()

    target = next(s for s in at.selectbox if s.label == "Target set")
    target.set_value("d")
    next(t for t in at.text_input if t.label == "Only where").set_value("id=nope")
    at.button[0].click().run()
    assert "No sample has id = nope" in at.error[0].value and not started
    target.set_value("(none)")
    next(t for t in at.text_input if t.label == "Only where").set_value("")

    at.text_input[0].set_value("0.05, 0.15")
    at.button[0].click().run()
    assert not at.exception and not at.error
    assert started and started[0][:3] == ["validate", "--run", done["run_id"]]
    assert started[0][started[0].index("--ratios") + 1] == "0.05,0.15"

    at.text_input[0].set_value("2")
    at.button[0].click().run()
    assert "between 0 and 1" in at.error[0].value and len(started) == 1


def test_validate_page_refreshes_fast_only_while_a_job_runs(done, monkeypatch):
    """A page left open polls every 30 s; while a validation or sweep job runs, every 5 s, and a
    job that starts after the page ran switches it (each refresh costs CPU the job pays for)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core import jobs

    paces = []
    fragment = st.fragment

    def recording(func=None, *, run_every=None):
        if func is None:  # used as @st.fragment(run_every=...)
            return lambda f: recording(f, run_every=run_every)
        paces.append((func.__name__, run_every))
        return fragment(func, run_every=run_every)

    running = pd.DataFrame({"job_id": ["validate-1"]})
    answers = []  # what live_jobs answers, call after call; then the last answer again

    def fake_live_jobs(store, kind):
        assert kind == "validate"
        return answers.pop(0) if len(answers) > 1 else answers[0]

    monkeypatch.setattr(st, "fragment", recording)
    monkeypatch.setattr(jobs, "live_jobs", fake_live_jobs)
    monkeypatch.setenv("INFOPRUNE_DB", str(done["store"].path))
    at = AppTest.from_file(str(ROOT / "pages" / "6_Validate.py"), default_timeout=60)

    answers[:] = [running.iloc[:0]]  # no job
    at.run()
    assert not at.exception and paces == [("live", 30), ("sweeps", 30)]

    paces.clear()
    answers[:] = [running]
    at.run()
    assert not at.exception and paces == [("live", 5), ("sweeps", 5)]

    paces.clear()  # none when the page ran, one by the time its section drew: the page runs again
    answers[:] = [running.iloc[:0], running]
    at.run()
    assert not at.exception and paces == [("live", 30), ("live", 5), ("sweeps", 5)]


def test_a_running_validation_is_not_started_twice(done):
    import subprocess
    import sys

    store, run_id = done["store"], done["run_id"]
    spec = spec_of(run_id, "prune-low", "0.5", seeds=1)
    stopped = CancelToken()
    stopped.cancel()
    assert validate.run_validation(store, spec, cancel=stopped).status == "cancelled"
    # A live process whose command line reads like an infoprune job holds the validation.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "core.cli"])
    try:
        with store.transaction() as con:
            con.execute(
                "UPDATE validations SET status = 'running', pid = ?, pid_start = ? "
                "WHERE validation_id = ?",
                [holder.pid, processes.start_time(holder.pid), spec.validation_id],
            )
        with pytest.raises(InputError, match="already running"):
            validate.start_validation_job(store, spec)
        with pytest.raises(InputError, match="already running"):  # nor resumed while it runs
            validate.resume_validation_job(store, spec.validation_id)
        with pytest.raises(InputError, match=f"already running in process {holder.pid}"):
            validate.run_validation(store, spec)
    finally:
        holder.kill()
        holder.wait()
    assert (
        validate.list_validations(store, run_id)
        .set_index("validation_id")
        .loc[spec.validation_id]
        .status
        == "stopped"
    )


def test_evidence_for_a_rule_is_the_matching_validation_or_the_nearest_ratios(done, tmp_path):
    from core.evidence import evidence_for
    from core.export import export_subset

    store, run_id, vid = done["store"], done["run_id"], done["spec"].validation_id
    exact = evidence_for(store, run_id, "bits_per_token", Rule("prune-low", 0.2))
    overall = exact.exact[exact.exact["group"].isna()]
    assert list(overall["validation_id"]) == [vid] and list(overall["ratio"]) == [0.2]
    assert exact.best["validation_id"] == vid and exact.best["eval_set"] == "heldout"
    between = evidence_for(store, run_id, "bits_per_token", Rule("prune-low", 0.3))
    assert between.exact.empty and set(between.nearest["ratio"]) == {0.2, 0.4}
    for other in (
        Rule("prune-high", None, 0.2),
        Rule("prune-low", 0.2, stratify="id"),
        Rule("prune-low", 0.2, dedup="exact"),
    ):
        found = evidence_for(store, run_id, "bits_per_token", other)
        assert found.exact.empty and found.best is None, other
    assert evidence_for(store, run_id, "word_entropy", Rule("prune-low", 0.2)).best is None

    out = tmp_path / "kept.jsonl"
    export_subset(store, run_id, "bits_per_token", Rule("prune-low", 0.2), out, fmt="jsonl")
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    backing = manifest["validation"]
    assert backing["validation_id"] == vid and backing["ci_low"] <= backing["ci_high"]
    assert backing["minus_random"] == pytest.approx(exact.best["minus_random"])
