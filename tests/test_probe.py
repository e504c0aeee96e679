"""The data probe: split, training, the card, loading with plain transformers, resume, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

from core.cli import main
from core.errors import InputError
from core.ingest import ingest_dataset
from core.jobs import CancelToken
from core.models import weights_hash
from core.options import to_argv
from core.probe import (
    cancel_probe,
    list_probes,
    lock_out_dir,
    probe_curve,
    run_probe,
    split_ids,
    start_probe_job,
)
from core.store import Store
from core.train_options import Budget, ProbeOptions, TrainConfig
from core.training import evaluate_bits, pack_rows, train_lm, train_tokenizer
from tests.conftest import corpus_texts, write_jsonl

# Tiny enough to train in seconds on two cores: short documents, vocabulary 500, 4 rows a step.
TINY = ["--size", "tiny", "--vocab", "500", "--batch-size", "4", "--fraction", "0.5"]


def short_docs(n: int) -> list[dict]:
    rows = [r for r in corpus_texts(4 * n) if len(r["text"]) < 1500]
    return [{"id": r["id"], "text": r["text"]} for r in rows[:n]]


def ingest(store: Store, tmp_path: Path, n: int, name: str = "docs") -> None:
    ingest_dataset(
        store, str(write_jsonl(tmp_path / f"{name}.jsonl", short_docs(n))), name, id_column="id"
    )


def read_ids(out: Path, value) -> list[str]:
    return (out / value).read_text().splitlines() if isinstance(value, str) else value


def tiny(vocab: int, batch_size: int, steps: int) -> ProbeOptions:
    """A tiny probe of half the samples, trained STEPS steps."""
    config = TrainConfig(size="tiny", vocab=vocab, batch_size=batch_size)
    return ProbeOptions(fraction=0.5, config=config, budget=Budget(steps=steps))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One probe trained through the CLI, shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("probe")
    store = Store(tmp / "ws.duckdb", lock_timeout=30)
    ingest(store, tmp, 60)
    out = tmp / "probe"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(
            [
                "train-probe",
                "--dataset",
                "docs",
                "--out",
                str(out),
                "--steps",
                "12",
                *TINY,
                "--db",
                str(store.path),
            ]
        )
    assert rc == 0
    return store, out, stdout.getvalue()


def test_split_is_reproducible_disjoint_and_independent_of_row_order():
    ids = [f"doc-{i}" for i in range(1000)]
    train, val = split_ids(ids, 0.2, seed=7)
    assert (train, val) == split_ids(list(reversed(ids)), 0.2, seed=7)
    assert not set(train) & set(val)
    assert len(train) == 200 and len(val) == 50
    assert split_ids(ids, 0.2, seed=8) != (train, val)
    # Other fractions keep the same validation slice, so their probes compare on the same text.
    assert split_ids(ids, 0.6, seed=7)[1] == val
    assert len(split_ids(ids, 1.0, seed=7)[0]) == 950


def test_options_are_the_flags_and_keep_the_checkpoint_key():
    from core.cli import build_parser
    from core.options import from_args

    opts = ProbeOptions(fraction=0.3, config=TrainConfig(size="tiny", lr=1e-3), budget=Budget())
    argv = ["train-probe", "--dataset", "d", "--out", "o", *to_argv(opts)]
    assert from_args(ProbeOptions, build_parser().parse_args(argv)) == opts
    assert "--minutes" not in argv and "--lr" in argv
    # A checkpoint written before the options were regrouped must still resume: same key.
    assert tiny(vocab=400, batch_size=4, steps=10).key("fp") == "6ea7be5a3280e2ea"
    assert ProbeOptions().key("fp") == "c154b62229d8e94f"


def test_training_needs_no_store_and_the_flags_need_no_torch():
    import subprocess
    import sys

    def loaded(modules: str) -> str:
        heavy = "{'core.store', 'torch', 'pandas'}"
        code = f"import sys, {modules}; print(sorted({heavy} & set(sys.modules)))"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout

    assert loaded("core.training") == "['torch']\n"
    assert loaded("core.commands.train_probe, core.commands.validate") == "[]\n"


def test_packing_predicts_every_token_once_with_documents_after_eos():
    seqs = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
    inputs, targets = pack_rows(seqs, seq_len=4, eos=0)
    stream = [0, 1, 2, 3, 0, 4, 5, 6, 7, 8, 0, 9]
    assert inputs.shape == targets.shape == (3, 4)
    assert inputs.flatten().tolist()[: len(stream)] == stream
    real = targets.flatten()[targets.flatten() != -100].tolist()
    assert real == stream[1:]


def test_cli_writes_a_probe_with_its_card(trained):
    store, out, stdout = trained
    assert stdout.strip().splitlines()[-1] == str(out)
    assert not (out / "checkpoint").exists()
    card = json.loads((out / "infoprune.json").read_text())
    fingerprint = store.query("SELECT fingerprint FROM datasets WHERE name = 'docs'")[0][0]
    assert card["dataset"] == "docs" and card["fingerprint"] == fingerprint
    assert (card["fraction"], card["seed"], card["vocab"], card["seq_len"]) == (0.5, 0, 500, 256)
    assert card["config"]["n_layer"] == 2 and card["config"]["n_embd"] == 128
    assert card["config"]["n_positions"] == 256 and card["config"]["vocab_size"] == 500
    # Tokens are counted without the padding of the last row.
    assert card["steps"] == 12 and 11 * 4 * 256 < card["tokens_seen"] <= 12 * 4 * 256
    assert card["training_seconds"] > 0 and card["infoprune_version"]
    ids = [r[0] for r in store.query("SELECT sample_id FROM samples ORDER BY row_idx")]
    train, val = split_ids(ids, 0.5, 0)
    assert read_ids(out, card["train_ids"]) == train and read_ids(out, card["val_ids"]) == val
    assert card["n_train_samples"] == 30 and card["n_val_samples"] == 3
    # Per token vs per byte: this tokenizer spends more than one byte per token on real text.
    assert 0 < card["val_bits_per_byte"] < card["val_bits_per_token"] < math.log2(500) + 1
    assert 0 < card["val_unigram_bits_per_token"] < math.log2(500)
    assert (out / "model.safetensors").stat().st_size < 20e6


def test_probe_loads_with_plain_transformers_and_scores_like_the_card(trained):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store, out, _ = trained
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    text = "def main():\n    print('héllo, wörld')  # ünïcode\n"
    raw = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok(text).input_ids == raw.encode(text).ids
    assert tok.decode(tok(text).input_ids) == text
    assert len(tok) == 500 and tok.eos_token == tok.bos_token == "<|endoftext|>"
    card = json.loads((out / "infoprune.json").read_text())
    val = read_ids(out, card["val_ids"])
    texts = [store.query("SELECT text FROM samples WHERE sample_id = ?", [i])[0][0] for i in val]
    bpt, bpb = evaluate_bits(model.float(), tok, texts)
    assert bpt == pytest.approx(card["val_bits_per_token"], rel=1e-5)
    assert bpb == pytest.approx(card["val_bits_per_byte"], rel=1e-5)


def test_probe_samples_say_which_samples_trained_it(trained):
    store, out, _ = trained
    card = json.loads((out / "infoprune.json").read_text())
    # The same hash scoring records, so Explore can join probe_samples to runs.
    assert weights_hash(out) == card["model_hash"]
    rows = store.query(
        "SELECT role, count(*), count(DISTINCT sample_id) FROM probe_samples "
        "WHERE model_hash = ? AND fingerprint = ? GROUP BY role ORDER BY role",
        [card["model_hash"], card["fingerprint"]],
    )
    assert rows == [("train", 30, 30), ("val", 3, 3)]


def test_probe_row_and_loss_curve(trained):
    store, _, _ = trained
    probes = list_probes(store)
    assert len(probes) == 1
    row = probes.iloc[0]
    assert (row["status"], row["step"], row["total_steps"]) == ("done", 12, 12)
    assert row["val_bits_per_token"] > 0
    curve = probe_curve(store, row["probe_id"])
    train = curve[curve["split"] == "train"]
    assert train["step"].tolist() == [5, 10, 12]
    assert curve[curve["split"] == "val"]["step"].tolist() == [5, 10, 12]
    # Twelve steps from a random start already beat the first logged loss.
    assert train["bits_per_token"].iloc[-1] < train["bits_per_token"].iloc[0]


def test_cancel_then_rerun_resumes_from_the_checkpoint(store, tmp_path):
    ingest(store, tmp_path, 40)
    opts = tiny(vocab=400, batch_size=4, steps=10)
    out = tmp_path / "probe"
    cancel = CancelToken()
    seen: list[int] = []

    def stop_after_6(p):
        seen.append(p.step)
        if p.step == 6:
            cancel.cancel()

    first = run_probe(store, "docs", out, opts, cancel=cancel, on_progress=stop_after_6)
    assert (first.status, first.step, first.total_steps) == ("cancelled", 6, 10)
    assert (out / "checkpoint" / "state.pt").exists() and not (out / "infoprune.json").exists()
    row = list_probes(store).iloc[0]
    assert (row["status"], row["step"]) == ("cancelled", 6)

    seen.clear()
    second = run_probe(store, "docs", out, opts, on_progress=lambda p: seen.append(p.step))
    assert second.probe_id == first.probe_id and second.status == "done"
    assert seen == list(range(7, 11))
    assert second.card["steps"] == 10 and second.card["tokens_seen"] > 9 * 4 * 256
    assert not (out / "checkpoint").exists()
    assert list_probes(store).iloc[0]["status"] == "done"
    steps = probe_curve(store, first.probe_id).query("split == 'train'")["step"].tolist()
    assert steps == [5, 10]

    # Resuming changes nothing: an uninterrupted run ends with the same weights.
    straight = run_probe(store, "docs", tmp_path / "straight", opts)
    assert straight.card["model_hash"] == second.card["model_hash"]


def test_large_weights_are_saved_in_bf16_and_score_in_float32(store, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from core import probe
    from core.models import load_model

    monkeypatch.setattr(probe, "MAX_FP32_BYTES", 0)  # as if the model were over the size limit
    ingest(store, tmp_path, 20)
    opts = tiny(vocab=300, batch_size=2, steps=2)
    outcome = run_probe(store, "docs", tmp_path / "p", opts)
    weights = load_file(tmp_path / "p" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    lm = load_model(str(tmp_path / "p"))
    assert next(lm.model.parameters()).dtype == torch.float32
    val = read_ids(tmp_path / "p", outcome.card["val_ids"])
    texts = [store.query("SELECT text FROM samples WHERE sample_id = ?", [i])[0][0] for i in val]
    bpt, _ = evaluate_bits(lm.model, lm.tokenizer, texts)
    assert bpt == pytest.approx(outcome.card["val_bits_per_token"], rel=1e-5)
    assert outcome.card["config"]["weights_dtype"] == "bfloat16"


def test_train_lm_without_a_store_stops_when_its_time_is_up():
    texts = [r["text"] for r in short_docs(30)]
    tok = train_tokenizer(texts[:25], 400)
    config = TrainConfig(size="tiny", vocab=400, batch_size=2)
    model, stats = train_lm(tok, texts[:25], texts[25:], config, Budget(minutes=0.05))
    assert stats.status == "done" and stats.steps == stats.total_steps >= 1
    assert 3 <= stats.seconds < 20  # the budget, plus the step and evaluation in flight
    bpt, bpb = evaluate_bits(model, tok, texts[25:])
    assert 0 < bpb < bpt


@pytest.mark.slow
def test_background_job_reports_progress_and_cancels_to_a_checkpoint(store, tmp_path):
    import time

    ingest(store, tmp_path, 40)
    out = tmp_path / "probe"
    probe_id = start_probe_job(store, "docs", out, tiny(vocab=400, batch_size=2, steps=100000))
    assert list_probes(store).iloc[0]["status"] in ("queued", "running")
    deadline = time.monotonic() + 180
    while list_probes(store).iloc[0]["step"] < 5:
        assert time.monotonic() < deadline, list_probes(store).iloc[0].to_dict()
        time.sleep(0.5)
    assert cancel_probe(store, probe_id)
    while list_probes(store).iloc[0]["status"] != "cancelled":
        assert time.monotonic() < deadline, list_probes(store).iloc[0].to_dict()
        time.sleep(0.5)
    assert (out / "checkpoint" / "state.pt").exists()
    assert len(probe_curve(store, probe_id)) >= 1
    assert not cancel_probe(store, probe_id)


def test_background_job_refuses_bad_input_before_starting(store, tmp_path):
    ingest(store, tmp_path, 12)
    with pytest.raises(InputError, match="--fraction"):
        start_probe_job(store, "docs", tmp_path / "p", ProbeOptions(fraction=2.0))
    with pytest.raises(InputError, match="unknown dataset"):
        start_probe_job(store, "nope", tmp_path / "p", ProbeOptions())
    assert store.query("SELECT count(*) FROM jobs")[0][0] == 0
    assert list_probes(store).empty


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_too_small_dataset_is_refused(store, tmp_path, capsys):
    ingest(store, tmp_path, 8, name="few")
    rc = main(
        [
            "train-probe",
            "--dataset",
            "few",
            "--out",
            str(tmp_path / "p"),
            *TINY,
            "--db",
            str(store.path),
        ]
    )
    assert rc == 2 and "at least 10" in error_line(capsys)
    ingest(store, tmp_path, 10, name="ten")
    rc = main(
        [
            "train-probe",
            "--dataset",
            "ten",
            "--out",
            str(tmp_path / "p"),
            "--fraction",
            "0.01",
            "--db",
            str(store.path),
        ]
    )
    assert rc == 2 and "no training sample" in error_line(capsys)
    assert list_probes(store).empty


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.2"])
def test_fraction_outside_0_1_is_refused(store, tmp_path, capsys, fraction):
    ingest(store, tmp_path, 12)
    rc = main(
        [
            "train-probe",
            "--dataset",
            "docs",
            "--out",
            str(tmp_path / "p"),
            "--fraction",
            fraction,
            "--db",
            str(store.path),
        ]
    )
    assert rc == 2 and "--fraction" in error_line(capsys)


def test_non_empty_output_directory_is_refused(store, tmp_path, capsys):
    ingest(store, tmp_path, 12)
    out = tmp_path / "p"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc = main(["train-probe", "--dataset", "docs", "--out", str(out), "--db", str(store.path)])
    assert rc == 2 and "not empty" in error_line(capsys)
    assert (out / "notes.txt").read_text() == "mine"


def test_checkpoint_of_other_options_is_not_resumed(store, tmp_path, capsys):
    ingest(store, tmp_path, 12)
    out = tmp_path / "p"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "resume.json").write_text(json.dumps({"key": "other", "probe_id": "x"}))
    rc = main(["train-probe", "--dataset", "docs", "--out", str(out), "--db", str(store.path)])
    assert rc == 2 and "other options" in error_line(capsys)


@pytest.mark.parametrize("content", ["{bad", "[1, 2]", ""])
def test_a_damaged_resume_record_is_one_error_line(store, tmp_path, capsys, content):
    ingest(store, tmp_path, 12)
    out = tmp_path / "p"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "resume.json").write_text(content)
    rc = main(["train-probe", "--dataset", "docs", "--out", str(out), "--db", str(store.path)])
    line = error_line(capsys)
    assert rc == 2 and "is damaged" in line and "resume.json" in line
    assert (out / "checkpoint" / "resume.json").read_text() == content


def test_a_directory_being_trained_is_refused(store, tmp_path, capsys):
    ingest(store, tmp_path, 12)
    out = tmp_path / "p"
    with lock_out_dir(out):  # as a training process holds it
        rc = main(["train-probe", "--dataset", "docs", "--out", str(out), "--db", str(store.path)])
    assert rc == 2 and "another process" in error_line(capsys)


def test_unknown_dataset_is_refused(store, tmp_path, capsys):
    ingest(store, tmp_path, 12)
    rc = main(
        ["train-probe", "--dataset", "nope", "--out", str(tmp_path / "p"), "--db", str(store.path)]
    )
    assert rc == 2 and "unknown dataset 'nope'" in error_line(capsys)
