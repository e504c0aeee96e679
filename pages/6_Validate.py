"""Validate: does a pruning rule help on this dataset? Retrain small models and compare."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.errors import InputError
from core.validate import (
    available_scores,
    cancel_validation,
    dataset_of,
    list_validations,
    load_results,
    resume_validation_job,
    start_validation_job,
    summarize,
    validation_log,
)
from core.validation_spec import (
    ARM_SIZES,
    BUDGETS,
    DEFAULT_SCORE,
    PRESETS,
    ValidateOptions,
    make_spec,
)
from ui.common import (
    RULE_LABELS,
    fmt_int,
    get_store,
    pick_dedup,
    pick_run,
    pick_stratify,
    require_access,
    show_error,
)

require_access()  # first: see ui/common.py

BUDGET_LABELS = {
    "equal-steps": "Equal steps (same compute for every arm)",
    "equal-epochs": "Equal epochs (pruned arms train less: the compute-saving view)",
}
ARM_COLORS = {
    "full": "#7f7f7f",
    "pruned": "#d62728",
    "random": "#1f77b4",
    "dedup": "#2ca02c",
    "dedup-random": "#17becf",
    "dedup+pruned": "#9467bd",
    "dedup+random": "#8c564b",
}
ARM_LABELS = {
    "pruned": "pruned by the rule",
    "random": "random, as many tokens",
    "dedup": "duplicates removed",
    "dedup-random": "random, as many tokens as dedup",
    "dedup+pruned": "duplicates removed, then the rule",
    "dedup+random": "random, as many tokens as dedup + rule",
}

st.title("Validate a rule")
st.caption(
    "Whether pruning helps is an empirical question per dataset. This trains the same small "
    "model from scratch on the samples a rule keeps, on a random subset with as many tokens, "
    "and on all the training data, then compares bits per token on a held-out set that is never "
    "pruned and that the probe never saw. Lower is better; the random arm is the baseline."
)
store = get_store()
run_id = pick_run(store, key="validate_run")


def start_form(run_id: str) -> None:
    scores = available_scores(store, run_id)
    default = PRESETS["default"]
    with st.form("start_validation"):
        c1, c2 = st.columns(2)
        score = c1.selectbox(
            "Score", scores, index=scores.index(DEFAULT_SCORE) if DEFAULT_SCORE in scores else 0
        )
        rule = c2.selectbox("Rule", list(RULE_LABELS), format_func=RULE_LABELS.get)
        ratios = st.text_input(
            "Ratios (shares of samples pruned)",
            ValidateOptions.ratios,
            help="Comma-separated. For keep-middle, LOW:HIGH pairs such as 0.1:0.05; a plain "
            "R there prunes R/2 from each end.",
        )
        c3, c4 = st.columns(2)
        seeds = c3.number_input("Seeds", min_value=1, max_value=10, value=3)
        size = c4.selectbox("Model size", ARM_SIZES)
        c5, c6 = st.columns(2)
        stratify = pick_stratify(store, dataset_of(store, run_id), "validate_stratify", c5)
        dedup = pick_dedup("validate_dedup", c6)
        budget = st.radio("Budget", BUDGETS, format_func=BUDGET_LABELS.get)
        quick = st.checkbox(
            "Quick: a smaller pool and fewer steps (a minute or two per ratio and seed)",
            help=f"Default: {default.steps} steps per arm on about {default.pool_bytes // 1000} "
            "kB of training text; 3 ratios × 3 seeds take up to half an hour on a laptop CPU.",
        )
        submitted = st.form_submit_button("Start validation", type="primary")
    if not submitted:
        return
    try:
        opts = ValidateOptions(
            run_id,
            rule,
            ratios,
            score=score,
            seeds=int(seeds),
            size=size,
            budget=budget,
            quick=quick,
            stratify=stratify,
            dedup=dedup,
        )
        spec = make_spec(opts)
        vid = start_validation_job(store, spec)
    except InputError as exc:
        show_error(exc)
        return
    st.session_state["current_validation"] = vid
    st.success(f"Started validation `{vid}` in the background — progress appears below.")


def chart(summary: pd.DataFrame, metric: str) -> go.Figure:
    """Held-out bits against ratio, one line per arm, the full-data level as a band."""
    mean, std = f"{metric}_mean", f"{metric}_std"
    fig = go.Figure()
    full = summary[summary["arm"] == "full"]
    if not full.empty:
        level, spread = float(full[mean].iloc[0]), float(full[std].iloc[0])
        if spread:
            fig.add_hrect(
                y0=level - spread, y1=level + spread, fillcolor=ARM_COLORS["full"], opacity=0.15
            )
        fig.add_hline(
            y=level,
            line_dash="dash",
            line_color=ARM_COLORS["full"],
            annotation_text="all training data",
        )
    ratios = sorted({float(r) for r in summary.loc[summary["arm"] != "full", "ratio"].dropna()})
    # From 0 (nothing pruned) to a little past the largest ratio, the arms drawn a little apart
    # so that one ratio's error bars do not hide each other; the ticks mark the ratios themselves.
    right = max(ratios, default=0.5) * 1.25 + 0.02
    for arm in ("dedup", "dedup-random"):  # no ratio: a level, like the full arm
        level = summary[summary["arm"] == arm]
        if not level.empty:
            fig.add_hline(
                y=float(level[mean].iloc[0]),
                line_dash="dot",
                line_color=ARM_COLORS[arm],
                annotation_text=ARM_LABELS[arm],
                annotation_position="bottom right" if arm == "dedup" else "top right",
            )
    nudges = {"pruned": -0.01, "random": 0.01, "dedup+pruned": -0.02, "dedup+random": 0.02}
    for arm, nudge in nudges.items():
        part = summary[summary["arm"] == arm]
        if part.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=part["ratio"].astype(float) + nudge * right,
                y=part[mean],
                customdata=part["ratio"],
                hovertemplate="%{customdata:.1%} pruned: %{y:.4f}<extra>" + arm + "</extra>",
                error_y={"type": "data", "array": part[std], "visible": True},
                mode="lines+markers",
                name=ARM_LABELS[arm],
                line_color=ARM_COLORS[arm],
            )
        )
    unit = "bits per token" if metric == "bpt" else "bits per byte"
    fig.update_layout(
        xaxis_title="share of samples pruned",
        yaxis_title=f"held-out {unit} (lower is better)",
        legend_title_text="",
        margin={"t": 30},
    )
    fig.update_xaxes(range=[0, right], tickvals=[0, *ratios], tickformat=".0%")
    return fig


def modifiers(settings: dict) -> list[str]:
    """A validation's stratify and dedup, in words (none for a plain one)."""
    out = []
    if settings.get("stratify"):
        out.append(f"within each {settings['stratify']}")
    if settings.get("dedup"):
        out.append(f"{settings['dedup']} dedup arms")
    return out


@st.fragment(run_every=2)
def live(run_id: str) -> None:
    """Refreshes itself every two seconds: progress, cancel, chart and table."""
    vals = list_validations(store, run_id)
    if vals.empty:
        st.caption("No validation of this run yet.")
        return
    for v in vals[vals["status"] == "running"].itertuples():
        done, total = int(v.n_done or 0), int(v.n_total or 0) or 1
        cols = st.columns([5, 1])
        cols[0].progress(
            done / total,
            text=f"`{v.validation_id}` · {v.rule} {v.ratios} · {done} / {total} arms trained",
        )
        if cols[1].button("Cancel", key=f"cancel_{v.validation_id}"):
            cancel_validation(store, v.validation_id)
            st.toast(f"Asked {v.validation_id} to stop; finished arms are kept")
        last = validation_log(store, v.validation_id, 1)
        if last:
            cols[0].caption(last)

    labels = {
        v.validation_id: f"{v.validation_id} · {v.score} · {v.rule} {v.ratios}"
        + "".join(f" · {m}" for m in modifiers(v.settings))
        + f" · {v.status}"
        for v in vals.itertuples()
    }
    ids = list(labels)
    current = st.session_state.get("current_validation")
    vid = st.selectbox(
        "Validation",
        ids,
        index=ids.index(current) if current in ids else 0,
        format_func=labels.get,
        key="validation_pick",
    )
    st.session_state["current_validation"] = vid
    row = vals[vals["validation_id"] == vid].iloc[0]
    if row["status"] == "failed" and row["error"]:
        st.error(f"This validation failed: {row['error']}")
    resumable = row["status"] in ("stopped", "cancelled", "failed")
    if resumable and st.button("Resume", key=f"resume_{vid}", help="finished arms are kept"):
        resume_validation_job(store, vid)
        st.toast(f"Resuming {vid}")
    results = load_results(store, vid)
    if results.empty:
        st.caption("No arm finished yet.")
    else:
        summary = summarize(results)
        metric = st.radio(
            "Measure",
            ["bpt", "bpb"],
            format_func={"bpt": "bits per token", "bpb": "bits per byte"}.get,
            horizontal=True,
            key="validation_metric",
        )
        st.plotly_chart(chart(summary, metric), key="validation_chart")
        st.dataframe(
            summary,
            hide_index=True,
            width="stretch",
            placeholder="—",
            column_config={
                "ratio": st.column_config.NumberColumn("ratio", format="%.2f"),
                "bpt_mean": st.column_config.NumberColumn("bits/token", format="%.4f"),
                "bpt_std": st.column_config.NumberColumn("± std", format="%.4f"),
                "bpb_mean": st.column_config.NumberColumn("bits/byte", format="%.4f"),
                "bpb_std": st.column_config.NumberColumn("± std ", format="%.4f"),
                "train_tokens": st.column_config.NumberColumn("train tokens", format="%d"),
                "steps": st.column_config.NumberColumn("steps", format="%d"),
                "minus_random": st.column_config.NumberColumn(
                    "− its random arm",
                    format="%+.4f",
                    help="bits/token, paired by seed: pruned − random, dedup − dedup-random, "
                    "dedup+pruned − dedup+random. Below 0: the arm beats a random subset with as "
                    "many tokens.",
                ),
            },
        )
        settings = row["settings"]
        if "pool_samples" in settings:
            st.caption(
                f"Training pool: {fmt_int(settings['pool_samples'])} samples, "
                f"{fmt_int(settings['pool_tokens'])} tokens; held-out set: "
                f"{fmt_int(settings['eval_samples'])} samples; tokenizer: "
                f"{settings['tokenizer']}; {settings['budget']}; model {settings['size']}."
            )
        with st.expander("Every arm"):
            st.dataframe(results, hide_index=True, width="stretch", placeholder="—")
    st.subheader("Validations of this run")
    st.dataframe(
        vals[["validation_id", "score", "rule", "ratios", "status", "n_done", "n_total", "error"]],
        hide_index=True,
        width="stretch",
        placeholder="—",
    )


if run_id is not None:
    start_form(run_id)
    live(run_id)
