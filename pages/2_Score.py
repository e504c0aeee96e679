"""Score: start a scoring run in the background, watch it, cancel it; train a data probe."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import InputError
from core.jobs import job_error
from core.scoring import ScoreOptions, cancel_run, list_runs, start_score_job
from pages.common import fmt_int, get_store, pick_dataset

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PROBE = ROOT / "sample_data" / "probe"
MODEL_CHOICES = {
    "probe": "Shipped probe (trained on the sample corpus)",
    "custom": "A local model directory or a hub id",
    "none": "None: model-free measures only (seconds)",
}

st.title("Score")
st.caption(
    "Each sample's information content is its description length under a causal language model, "
    "−log₂ q(x) in bits. Runs execute in a background process: reloading the page or closing "
    "the browser does not stop them, and running the same configuration again reuses the result."
)
store = get_store()
dataset = pick_dataset(store, key="score_dataset")


def start_form(dataset: str) -> None:
    with st.form("start_run"):
        choice = st.radio(
            "Model",
            list(MODEL_CHOICES),
            format_func=MODEL_CHOICES.get,
            index=0 if SHIPPED_PROBE.exists() else 1,
            horizontal=True,
        )
        custom = st.text_input(
            "Model directory or hub id (for the second option)",
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
    model = {"probe": str(SHIPPED_PROBE), "custom": custom.strip(), "none": "none"}[choice]
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


if dataset is not None:
    start_form(dataset)
live_runs(dataset)
