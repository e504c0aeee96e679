"""Score: start a scoring run in the background, watch it, cancel it; train a data probe."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.errors import InputError
from core.jobs import job_error
from core.probe import cancel_probe, list_probes, probe_curve, start_probe_job
from core.scoring import ScoreOptions, cancel_run, list_runs, start_score_job
from core.train_options import DEFAULT_MINUTES, SIZES, Budget, ProbeOptions, TrainConfig
from ui.common import fmt_int, get_store, pick_dataset, require_access

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
    with st.form("start_run"):
        choice = st.selectbox("Model", list(choices), key="score_model_choice")
        custom = st.text_input(
            "Model directory or hub id (when 'Another…' is chosen)",
            placeholder="/models/my-probe · gpt2 · EleutherAI/pythia-160m",
        )
        c1, c2 = st.columns(2)
        device = c1.selectbox("Device", ["auto", "cpu", "cuda", "mps"])
        dtype = c2.selectbox(
            "Precision",
            ["auto", "float32", "bfloat16", "float16"],
            help="auto = bfloat16 where the hardware is fast at it (mean difference < 0.1 %)",
        )
        with st.expander("Advanced"):
            a1, a2, a3, a4 = st.columns(4)
            window = a1.number_input("Window (0 = model max)", min_value=0, step=64)
            stride = a2.number_input("Stride (0 = window/2)", min_value=0, step=32)
            budget = a3.number_input("Max batch tokens", min_value=256, value=8192, step=1024)
            limit = a4.number_input("Only the first N samples (0 = all)", min_value=0, step=100)
            trust = st.checkbox("Trust remote code (runs the model repository's Python code)")
            pickle = st.checkbox("Allow pickle (.bin) weights")
        submitted = st.form_submit_button("Start scoring", type="primary")
    if not submitted:
        return
    model = custom.strip() if choice == CUSTOM else choices[choice]
    if not model:
        st.error("Enter a model directory or hub id, or pick another model option.")
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
        job_id = start_score_job(store, dataset, opts)
    except InputError as exc:
        st.error(str(exc))
        return
    st.session_state.setdefault("score_jobs", []).append(job_id)
    st.success(f"Started background job `{job_id}` — progress appears below.")


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
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@st.fragment(run_every=2)
def live_runs(dataset: str | None) -> None:
    """Refreshes itself every two seconds: progress, speed, ETA, cancel."""
    for job_id in st.session_state.get("score_jobs", []):
        err = job_error(store, job_id)
        if err:
            st.error(f"Job `{job_id}` stopped — {err}")
    runs = list_runs(store, dataset)
    active = runs[runs["status"] == "running"]
    for run in active.itertuples():
        done = int(run.n_done or 0)
        total = int(run.n_total or 0) or 1
        speed = f"{run.tokens_per_s:,.0f} tokens/s" if pd.notna(run.tokens_per_s) else "…"
        eta = f" · ETA {_duration(run.eta_s)}" if pd.notna(run.eta_s) else ""
        cols = st.columns([5, 1])
        cols[0].progress(
            done / total,
            text=f"`{run.run_id}` · {Path(str(run.model)).name} · "
            f"{fmt_int(done)} / {fmt_int(total)} samples · {speed}{eta}",
        )
        if cols[1].button("Cancel", key=f"cancel_{run.run_id}"):
            cancel_run(store, run.run_id)
            st.toast(f"Asked {run.run_id} to stop after its current batch")
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
        duration=[_duration(s) for s in runs["seconds"]],
    )
    st.dataframe(
        table[
            ["run_id", "dataset", "model", "status", "progress", "tokens_per_s", "duration"]
            + ["device", "dtype", "error"]
        ],
        hide_index=True,
        width="stretch",
        column_config={"tokens_per_s": st.column_config.NumberColumn("tokens/s", format="%.0f")},
    )
    resumable = runs[runs["status"].isin(["stopped", "cancelled", "failed"])]
    if not resumable.empty:
        st.caption(
            "Stopped, cancelled or failed runs resume where they stopped when the same "
            "configuration is started again."
        )


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
            st.error(str(exc))
        else:
            st.session_state["current_probe"] = probe_id
            st.success(f"Started probe training `{probe_id}` in the background.")


@st.fragment(run_every=3)
def live_probes() -> None:
    """Probe jobs with their progress and loss curve, refreshed every few seconds."""
    probes = list_probes(store)
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
live_probes()
