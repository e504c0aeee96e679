"""Score: start a scoring run in the background, watch it, cancel or resume it; train a probe."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.errors import InputError
from core.jobs import get_job, job_error, live_jobs
from core.models import configured_max_positions
from core.probe import cancel_probe, list_probes, probe_curve, start_probe_job
from core.scoring import (
    ScoreOptions,
    cancel_run,
    latest_model_run,
    list_runs,
    resume_score_job,
    run_of_job,
    start_score_job,
    token_counts,
)
from core.train_options import DEFAULT_MINUTES, SIZES, Budget, ProbeOptions, TrainConfig
from core.windows import positions_per_token
from ui.common import fmt_int, get_store, page_link, pick_dataset, require_access, show_error

require_access()  # first: see ui/common.py

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PROBE = ROOT / "sample_data" / "probe"
CUSTOM = "Another local model directory or hub id…"
NONE = "None: model-free measures only (seconds)"

st.title("Score")
st.caption(
    "Each sample's information content is its description length under a causal language model, "
    "−log₂ q(x) in bits. Runs execute in a background process: reloading the page or closing "
    "the browser does not stop them, and running the same configuration again reuses the result."
)
store = get_store()
dataset = pick_dataset(store, key="score_dataset")


def start_form(dataset: str) -> None:
    choices = model_choices()
    choice = st.selectbox("Model", list(choices), key="score_model_choice")
    model = choices[choice]
    if choice == CUSTOM:
        model = st.text_input(
            "Model directory or hub id",
            key="score_model_path",
            placeholder="/models/my-probe · gpt2 · EleutherAI/pythia-160m",
            help="A local directory is checked (config, tokenizer, safe weights) before the run "
            "starts; a hub id is downloaded by the run.",
        ).strip()
    c1, c2 = st.columns(2)
    device = c1.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="score_device")
    dtype = c2.selectbox(
        "Precision",
        ["auto", "float32", "bfloat16", "float16"],
        key="score_dtype",
        help="auto = bfloat16 where the hardware is fast at it (mean difference < 0.1 %)",
    )
    with st.expander("Advanced: window and stride (context against cost), batch, limits"):
        a1, a2, a3, a4 = st.columns(4)
        window = a1.number_input("Window (0 = model max)", min_value=0, step=64)
        stride = a2.number_input("Stride (0 = window/2)", min_value=0, step=32)
        budget = a3.number_input("Max batch tokens", min_value=256, value=8192, step=1024)
        limit = a4.number_input("Only the first N samples (0 = all)", min_value=0, step=100)
        if model and model != "none":
            st.caption(stride_cost(dataset, model, int(window), int(stride)))
        trust = st.checkbox("Trust remote code (runs the model repository's Python code)")
        pickle = st.checkbox("Allow pickle (.bin) weights")
    if not st.button("Start scoring", type="primary", key="score_start"):
        return
    if not model:
        st.error("Enter a model directory or hub id above, or choose another model.")
        return
    opts = ScoreOptions(
        model=model,
        device=device,
        dtype=dtype,
        window=int(window) or None,
        stride=int(stride) or None,
        max_batch_tokens=int(budget),
        limit=int(limit) or None,
        trust_remote_code=trust,
        allow_pickle=pickle,
    )
    try:
        with st.spinner("Checking the model…"):
            job_id = start_score_job(store, dataset, opts)
    except InputError as exc:
        show_error(exc)
        return
    st.session_state.setdefault("score_jobs", []).append(job_id)
    what = "model-free measures" if opts.model_free else f"`{model}`"
    st.success(f"Started background job `{job_id}` with {what} — progress appears below.")


def stride_cost(dataset: str, model: str, window: int, stride: int) -> str:
    """What the chosen stride buys (context) and costs (positions computed per scored token), on
    this dataset's token counts when a finished run has them."""
    w = window or configured_max_positions(model)
    if w is None:
        return (
            "Stride: each token is predicted with at least window − stride tokens of context; "
            "the model computes about window ÷ stride positions per scored token on long samples."
        )
    s = stride or w // 2
    if not 1 <= s <= w or w < 2:
        return f"Choose a stride between 1 and the window ({fmt_int(w)})."
    run_id = latest_model_run(store, dataset)
    lengths = cached_token_counts(str(store.path), run_id) if run_id else [10**6]
    cost, cheapest = positions_per_token(lengths, w, s), positions_per_token(lengths, w, w - 1)
    where = (
        f"on this dataset (token counts of run `{run_id}`)"
        if run_id
        else "on samples much longer than the window"
    )
    text = (
        f"Window {fmt_int(w)}, stride {fmt_int(s)}: every token is predicted with at least "
        f"{fmt_int(max(w - s, 1))} tokens of context; the model computes "
        f"**{cost:.2f} positions per scored token** {where}."
    )
    if cost and cheapest and s < w - 1:
        text += (
            f" Stride {fmt_int(w - 1)} would compute {cheapest:.2f} (about "
            f"{cost / cheapest:.1f}× less work), with less context for the tokens after each "
            "window's start."
        )
    return text


@st.cache_data(show_spinner=False, max_entries=8)
def cached_token_counts(db: str, run_id: str):
    return token_counts(store, run_id)  # a finished run's counts never change


def model_choices() -> dict[str, str]:
    """Label -> model argument: the shipped probe, probes trained here, any model, none."""
    choices = {}
    if SHIPPED_PROBE.exists():
        choices["Shipped probe (trained on the sample corpus)"] = str(SHIPPED_PROBE)
    probes = list_probes(store)
    for p in probes[probes["status"] == "done"].itertuples():
        choices[f"Probe {p.probe_id} trained on '{p.dataset}' ({p.out_dir})"] = p.out_dir
    choices[CUSTOM] = ""
    choices[NONE] = "none"
    return choices


def _duration(seconds) -> str:
    if seconds is None or pd.isna(seconds):
        return ""
    if seconds < 1:
        return "< 1 s"  # not 0:00:00, which reads as nothing done
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def latest_jobs(dataset: str | None) -> list[str]:
    """The last job this session started on DATASET (or on each, for None): an error is shown
    until a later job on the same dataset replaces it, and only on its dataset's page."""
    latest: dict[str, str] = {}
    for job_id in st.session_state.get("score_jobs", []):
        ref = get_job(store, job_id)["ref"]
        if dataset is None or ref == dataset:
            latest[ref] = job_id
    return list(latest.values())


def _when(stamp) -> str | None:
    return None if stamp is None or pd.isna(stamp) else f"{stamp:%Y-%m-%d %H:%M:%S}"


# Each refresh costs the server and the browser CPU time, which a scoring job on the same cores
# pays for several times over (its threads wait for one another): refreshed every 2 s, a run
# started here scored ~22 % slower than `infoprune score`; every 5 s, as fast
# (benchmarks/score_page_vs_cli.py). A run commits every ~3 s.
LIVE_RUNS_EVERY_S = 5


@st.fragment(run_every=LIVE_RUNS_EVERY_S)
def live_runs(dataset: str | None) -> None:
    """Refreshes itself every few seconds: what each job is doing, progress, speed, ETA, cancel,
    the runs that finished, resume."""
    for job_id in latest_jobs(dataset):
        err = job_error(store, job_id)
        if err:
            st.error(f"Job `{job_id}` stopped — {err}")
    runs = list_runs(store, dataset)
    active = runs[runs["status"] == "running"]
    jobs = live_jobs(store, "score")
    if dataset is not None:
        jobs = jobs[jobs["ref"] == dataset]
    phases = {int(j.pid): j.phase for j in jobs.itertuples() if pd.notna(j.pid)}
    claimed = {int(p) for p in active["pid"] if pd.notna(p)}
    for job in jobs.itertuples():  # not scoring yet: say what it is doing
        if pd.isna(job.pid) or int(job.pid) not in claimed:
            st.progress(0.0, text=f"`{job.job_id}` · {job.ref} · {job.phase or 'starting'}…")
    for run in active.itertuples():
        done = int(run.n_done or 0)
        total = int(run.n_total or 0) or 1
        label = f"`{run.run_id}` · {Path(str(run.model)).name}"
        if done == 0:
            phase = phases.get(int(run.pid)) if pd.notna(run.pid) else None
            text = f"{label} · {phase or 'starting'}… ({fmt_int(total)} samples to score)"
        else:
            speed = f"{run.tokens_per_s:,.0f} tokens/s" if pd.notna(run.tokens_per_s) else "…"
            eta = f" · ETA {_duration(run.eta_s)}" if pd.notna(run.eta_s) else ""
            text = f"{label} · {fmt_int(done)} / {fmt_int(total)} samples · {speed}{eta}"
        cols = st.columns([5, 1])
        cols[0].progress(done / total, text=text)
        if cols[1].button("Cancel", key=f"cancel_{run.run_id}"):
            cancel_run(store, run.run_id)
            st.toast(f"Asked {run.run_id} to stop after its current batch")
    finished_notice(runs, active)
    st.subheader("Runs")
    if runs.empty:
        st.caption("No runs yet.")
        return
    table = runs.assign(
        model=[Path(str(m).rstrip("/")).name or m for m in runs["model"]],
        progress=[
            f"{int(d or 0):,}/{int(t or 0):,}"
            for d, t in zip(runs.n_done, runs.n_total, strict=True)
        ],
        started=[_when(s) for s in runs["started_at"].fillna(runs["created_at"])],
        finished=[_when(f) for f in runs["finished_at"]],
        duration=[_duration(s) or None for s in runs["seconds"]],
    )
    st.dataframe(
        table[
            ["run_id", "dataset", "model", "status", "progress", "started", "finished"]
            + ["duration", "tokens_per_s", "device", "dtype", "error"]
        ],
        hide_index=True,
        width="stretch",
        placeholder="—",
        column_config={"tokens_per_s": st.column_config.NumberColumn("tokens/s", format="%.0f")},
    )
    resume_buttons(runs)


def finished_notice(runs: pd.DataFrame, active: pd.DataFrame) -> None:
    """The latest run this session watched (started here, or seen running) that is done, with a
    link to look at it."""
    watched = st.session_state.setdefault("score_watched_runs", [])
    watched.extend(r for r in active["run_id"] if r not in watched)
    for job_id in st.session_state.get("score_jobs", []):
        run_id = run_of_job(store, job_id)
        if run_id and run_id not in watched:
            watched.append(run_id)
    done = runs[runs["run_id"].isin(watched) & (runs["status"] == "done")]
    if done.empty:
        return
    run = done.iloc[0]  # newest first
    took = "" if pd.isna(run.seconds) else f" in {_duration(run.seconds)}"
    st.success(
        f"Run `{run.run_id}` finished at {_when(run.finished_at) or 'just now'}: "
        f"{fmt_int(run.n_done or 0)} samples scored{took}.",
        icon=":material/check_circle:",
    )
    st.session_state["current_run"] = run.run_id  # the next page opens on it
    page_link("pages/3_Explore.py", label="Explore its scores", icon=":material/search:")


def resume_buttons(runs: pd.DataFrame) -> None:
    """A Resume button for each run that stopped before it was done."""
    stopped = runs[runs["status"].isin(["stopped", "cancelled", "failed"])].head(5)
    for run in stopped.itertuples():
        cols = st.columns([5, 1])
        why = f": {run.error}" if isinstance(run.error, str) and run.error else ""
        cols[0].caption(
            f"`{run.run_id}` {run.status} at {fmt_int(run.n_done or 0)} / "
            f"{fmt_int(run.n_total or 0)} samples{why}"
        )
        if cols[1].button("Resume", key=f"resume_{run.run_id}", help="goes on from its last batch"):
            try:
                job_id = resume_score_job(store, run.run_id)
            except InputError as exc:
                show_error(exc)
            else:
                st.session_state.setdefault("score_jobs", []).append(job_id)
                st.toast(f"Resuming {run.run_id}")


def probe_form(dataset: str) -> None:
    st.subheader("Train a data probe")
    st.caption(
        "The paper's probe: a small GPT-2 trained from scratch on a fraction of this dataset. "
        "Prefer it for domain data or without network access; prefer a pretrained model "
        "(`gpt2`, `EleutherAI/pythia-160m`) for large, general web corpora."
    )
    default_out = get_store().path.parent / "probes" / dataset
    default = ProbeOptions()
    with st.form("train_probe"):
        out_dir = st.text_input(
            "Output directory (new, or a stopped probe's to resume)", str(default_out)
        )
        c1, c2, c3, c4 = st.columns(4)
        fraction = c1.number_input("Training fraction", 0.01, 1.0, default.fraction, 0.05)
        size = c2.selectbox("Size", list(SIZES), index=list(SIZES).index(default.config.size))
        minutes = c3.number_input("Minutes of training", 0.5, 600.0, DEFAULT_MINUTES, 0.5)
        seed = c4.number_input("Seed", 0, 10_000, default.seed)
        c5, c6 = st.columns(2)
        vocab = c5.number_input("Vocabulary", 512, 65536, default.config.vocab, 1024)
        seq_len = c6.number_input("Context (tokens)", 256, 2048, default.config.seq_len, 64)
        submitted = st.form_submit_button("Train probe")
    if submitted:
        try:
            opts = ProbeOptions(
                fraction=float(fraction),
                seed=int(seed),
                config=TrainConfig(size=size, vocab=int(vocab), seq_len=int(seq_len)),
                budget=Budget(minutes=float(minutes)),
            )
            probe_id = start_probe_job(store, dataset, out_dir, opts)
        except InputError as exc:
            show_error(exc)
        else:
            st.session_state["current_probe"] = probe_id
            st.success(f"Started probe training `{probe_id}` in the background.")


TRAINING = ["queued", "running"]


def live_probes(training: bool) -> None:
    """Probe jobs with their progress and loss curve: a fragment refreshed every 3 s while a probe
    trains (TRAINING, when the page ran), else every 30 s. Each refresh costs CPU time that a run
    on the same cores pays for (see LIVE_RUNS_EVERY_S): a page left open polls little."""
    probes = list_probes(store)
    if not training and probes["status"].isin(TRAINING).any():
        st.rerun()  # a probe started elsewhere: the page runs again and refreshes it every 3 s
    if probes.empty:
        return
    st.subheader("Probes")
    ids = probes["probe_id"].tolist()
    current = st.session_state.get("current_probe")
    probe_id = st.selectbox(
        "Probe", ids, index=ids.index(current) if current in ids else 0, key="probe_pick"
    )
    row = probes[probes["probe_id"] == probe_id].iloc[0]
    total = int(row.total_steps) if pd.notna(row.total_steps) and row.total_steps else 0
    step = int(row.step or 0)
    cols = st.columns([5, 1])
    cols[0].progress(
        min(step / total, 1.0) if total else 0.0,
        text=f"{row.status} · step {step:,}"
        + (f" / {total:,}" if total else "")
        + (
            f" · val {row.val_bits_per_token:.3f} bits/token"
            if pd.notna(row.val_bits_per_token)
            else ""
        ),
    )
    if row.status in ("queued", "running") and cols[1].button("Cancel", key="cancel_probe"):
        cancel_probe(store, probe_id)
        st.toast("Asked the probe to checkpoint and stop; start it again to resume.")
    if pd.notna(row.error) and row.error:
        st.error(row.error)
    curve = probe_curve(store, probe_id)
    if not curve.empty:
        fig = go.Figure()
        for split, colour in (("train", "#1f77b4"), ("val", "#d62728")):
            part = curve[curve["split"] == split]
            fig.add_scatter(
                x=part["step"],
                y=part["bits_per_token"],
                name=split,
                mode="lines+markers" if split == "val" else "lines",
                line={"color": colour},
            )
        fig.update_layout(
            height=300, margin={"t": 10, "b": 10}, xaxis_title="step", yaxis_title="bits per token"
        )
        st.plotly_chart(fig, width="stretch")
    st.caption(f"Model directory: `{row.out_dir}` — score with it by choosing it above.")


if dataset is not None:
    start_form(dataset)
live_runs(dataset)
if dataset is not None:
    probe_form(dataset)
training = bool(list_probes(store)["status"].isin(TRAINING).any())
st.fragment(live_probes, run_every=3 if training else 30)(training)
