"""Validate: does a pruning rule help on this dataset? Retrain small models and compare."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.datasets import dataset_names
from core.effects import NO_DIFFERENCE, effects
from core.errors import InputError
from core.jobs import live_jobs
from core.sweep import (
    best_row,
    describe,
    export_command,
    list_sweeps,
    make_sweep,
    recommendation,
    start_sweep_job,
    sweep_log,
    sweep_preset,
    sweep_table,
)
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
NO_TARGET = "(none)"
# Each refresh costs the server and the browser CPU time, which a validation training on the same
# cores pays for (see LIVE_RUNS_EVERY_S on the Score page): the sections refresh every few seconds
# while a validation or sweep job runs, and seldom otherwise (a job started elsewhere shows within
# IDLE_EVERY_S, then the page refreshes fast until it ends).
LIVE_EVERY_S = 5
IDLE_EVERY_S = 30
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
        c7, c8 = st.columns(2)
        targets = [NO_TARGET, *dataset_names(store)]
        eval_dataset = c7.selectbox(
            "Target set",
            targets,
            help="The text you want the model to be good at: every arm is also evaluated on it "
            "(up to the held-out set's size). It is never pruned and never in the training pool; "
            "its texts that the pool also holds are left out and counted.",
        )
        eval_filter = c8.text_input(
            "Only where",
            placeholder="COLUMN=VALUE, e.g. source=python-docs",
            help="Evaluate on the target's samples whose metadata column has this value.",
        )
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
            eval_dataset=None if eval_dataset == NO_TARGET else eval_dataset,
            eval_filter=eval_filter.strip() or None,
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


VERDICT_COLORS = {
    "better than random": "#2ca02c",
    "worse than random": "#d62728",
    NO_DIFFERENCE: "#7f7f7f",
}
EFFECT_CONFIG = {
    "eval_set": st.column_config.TextColumn("evaluated on"),
    "ratio": st.column_config.NumberColumn("ratio", format="%.2f"),
    "minus_random": st.column_config.NumberColumn("− its random arm", format="%+.4f"),
    "ci_low": st.column_config.NumberColumn("95 % from", format="%+.4f"),
    "ci_high": st.column_config.NumberColumn("to", format="%+.4f"),
    "detectable": st.column_config.NumberColumn(
        "detectable",
        format="%.4f",
        help="The smallest difference this evaluation set could tell from 0 (80 % power).",
    ),
}


def show_effects(vid: str) -> None:
    """Each arm against its random arm, with intervals, overall and per group."""
    table = effects(store, vid, by_group=True)
    if table.empty:
        return
    overall = table[table["group"].isna()].drop(columns="group")
    st.markdown(
        "**Against a random subset with as many tokens** — bits/token, paired by seed; 95 % "
        "bootstrap interval over seeds and evaluation documents. An interval that contains 0 is "
        "*no detectable difference*."
    )
    st.dataframe(overall, hide_index=True, width="stretch", column_config=EFFECT_CONFIG)
    groups = table.dropna(subset=["group", "minus_random"])
    if groups.empty:
        return
    with st.expander("Per group: which kinds of text each arm helps or hurts", expanded=True):
        st.plotly_chart(effects_figure(groups), key="validation_effects")
        st.dataframe(groups, hide_index=True, width="stretch", column_config=EFFECT_CONFIG)


def effects_figure(groups: pd.DataFrame) -> go.Figure:
    """Effect ± interval per group (rows) for each arm and ratio (colour by verdict)."""
    fig = go.Figure()
    for (eval_set, arm, ratio), part in groups.groupby(["eval_set", "arm", "ratio"], dropna=False):
        label = f"{arm}" + ("" if pd.isna(ratio) else f" {ratio:.0%}") + f" · {eval_set}"
        fig.add_trace(
            go.Scatter(
                x=part["minus_random"],
                y=part["group"].astype(str),
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": part["ci_high"] - part["minus_random"],
                    "arrayminus": part["minus_random"] - part["ci_low"],
                },
                mode="markers",
                marker={"color": [VERDICT_COLORS[v] for v in part["verdict"]], "size": 9},
                name=label,
                hovertemplate="%{y}: %{x:+.4f} bits/token<extra>" + label + "</extra>",
            )
        )
    fig.add_vline(x=0, line_color="#444")
    fig.update_layout(
        xaxis_title="bits/token − its random arm (below 0: better than random)",
        height=120 + 28 * groups["group"].nunique(),
        margin={"t": 20},
    )
    return fig


def modifiers(settings: dict) -> list[str]:
    """A validation's stratify and dedup, in words (none for a plain one)."""
    out = []
    if settings.get("eval_dataset"):
        where = f" where {settings['eval_filter']}" if settings.get("eval_filter") else ""
        out.append(f"target {settings['eval_dataset']}{where}")
    if settings.get("stratify"):
        out.append(f"within each {settings['stratify']}")
    if settings.get("dedup"):
        out.append(f"{settings['dedup']} dedup arms")
    return out


def validating() -> bool:
    """Whether a validation or sweep job runs (both are jobs of kind 'validate')."""
    return not live_jobs(store, "validate").empty


def follow_jobs(active: bool) -> None:
    """Run the page again when a job started or ended since it ran, so that the sections refresh
    at the pace that fits (ACTIVE: whether a job ran when the page ran)."""
    if validating() != active:
        st.rerun()


def live(run_id: str, active: bool) -> None:
    """Progress, cancel, chart and table: a fragment refreshed every LIVE_EVERY_S while a job runs
    (ACTIVE), else every IDLE_EVERY_S."""
    follow_jobs(active)
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
        try:
            resume_validation_job(store, vid)
        except InputError as exc:  # e.g. its run's dataset changed, or it runs already
            show_error(exc)
        else:
            st.toast(f"Resuming {vid}")
            st.rerun()  # the whole page: its sections now refresh at a running job's pace
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
                "target_bpt_mean": st.column_config.NumberColumn(
                    "target bits/token", format="%.4f", help="on the target set, mean over seeds"
                ),
                "minus_random": st.column_config.NumberColumn(
                    "− its random arm",
                    format="%+.4f",
                    help="bits/token, paired by seed: pruned − random, dedup − dedup-random, "
                    "dedup+pruned − dedup+random. Below 0: the arm beats a random subset with as "
                    "many tokens.",
                ),
            },
        )
        show_effects(vid)
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


def sweep_form(run_id: str) -> None:
    """Start a sweep: every rule, ratio, score, stratified or not, within a time budget."""
    with st.form("start_sweep"):
        st.markdown(
            "**Sweep**: validate every rule × the ratios × the whole dataset and within each "
            "group × every stored score, best first, within a time budget. The full arm is "
            "trained once and shared; starting the same sweep again continues it."
        )
        c1, c2, c3 = st.columns(3)
        minutes = c1.number_input("Minutes", min_value=1, max_value=600, value=30)
        ratios = c2.text_input("Ratios", ValidateOptions.ratios)
        stratify = pick_stratify(store, dataset_of(store, run_id), "sweep_stratify", c3)
        c4, c5 = st.columns(2)
        targets = [NO_TARGET, *dataset_names(store)]
        eval_dataset = c4.selectbox("Target set", targets, key="sweep_target")
        eval_filter = c5.text_input("Only where", placeholder="COLUMN=VALUE", key="sweep_filter")
        quick = st.checkbox("Quick: a smaller pool and fewer steps", key="sweep_quick")
        submitted = st.form_submit_button("Start sweep")
    started = st.session_state.pop("sweep_started", None)
    if started:
        st.success(f"Started `{started}` in the background — its table fills in below.")
    if not submitted:
        return
    try:
        opts = ValidateOptions(
            run_id,
            ratios=ratios,
            sweep=True,
            minutes=float(minutes),
            quick=quick,
            stratify=stratify,
            eval_dataset=None if eval_dataset == NO_TARGET else eval_dataset,
            eval_filter=eval_filter.strip() or None,
        )
        sweep_id = start_sweep_job(store, make_sweep(store, opts))
    except InputError as exc:
        show_error(exc)
        return
    st.session_state["current_sweep"] = sweep_id
    st.session_state["sweep_started"] = sweep_id
    st.rerun()  # the sections above were drawn before the job ran: refresh them at its pace


def sweeps(run_id: str) -> None:
    """The run's sweeps: progress, the ranked table, the chart and the recommendation (a fragment
    refreshed as `live` is)."""
    listed = list_sweeps(store, run_id)
    if listed.empty:
        return
    st.subheader("Sweeps of this run")
    labels = {
        r.sweep_id: f"{r.sweep_id} · {r.n_done} of {r.n_total} configurations done"
        for r in listed.itertuples()
    }
    ids = list(labels)
    current = st.session_state.get("current_sweep")
    sweep_id = st.selectbox(
        "Sweep",
        ids,
        index=ids.index(current) if current in ids else 0,
        format_func=labels.get,
        key="sweep_pick",
    )
    last = sweep_log(store, sweep_id)
    if last:
        st.caption(last)
    table = sweep_table(store, sweep_id)
    st.info(recommendation(table))
    finished = table.dropna(subset=["heldout"])
    if not finished.empty:
        st.plotly_chart(sweep_figure(finished), key="sweep_chart")
    top = best_row(table)
    if top is not None:
        if st.button(f"Open “{describe(top)}” on Prune & Export", key="sweep_use"):
            st.session_state["prune_preset"] = sweep_preset(store, top, run_id)
            st.switch_page("pages/4_Prune_and_Export.py")
        st.caption(f"Or from a terminal: `{export_command(store, top, run_id)}`")
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        placeholder="—",
        column_config={
            "ratio": st.column_config.NumberColumn("ratio", format="%.2f"),
            "heldout": st.column_config.NumberColumn("held-out − random", format="%+.4f"),
            "heldout_low": st.column_config.NumberColumn("95 % from", format="%+.4f"),
            "heldout_high": st.column_config.NumberColumn("to", format="%+.4f"),
            "target": st.column_config.NumberColumn("target − random", format="%+.4f"),
            "target_low": st.column_config.NumberColumn("95 % from ", format="%+.4f"),
            "target_high": st.column_config.NumberColumn("to ", format="%+.4f"),
            "seconds": st.column_config.NumberColumn("seconds", format="%.0f"),
        },
    )


def sweep_figure(table: pd.DataFrame) -> go.Figure:
    """Each configuration's effect against random ± its interval, on each evaluation set."""
    fig = go.Figure()
    names = [f"{r['rank']}. {describe(r)}" for _, r in table.iterrows()]
    for key, label, color in (("heldout", "held-out", "#1f77b4"), ("target", "target", "#ff7f0e")):
        if table[key].isna().all():
            continue
        fig.add_trace(
            go.Scatter(
                x=table[key],
                y=names,
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": table[f"{key}_high"] - table[key],
                    "arrayminus": table[key] - table[f"{key}_low"],
                },
                mode="markers",
                marker={"color": color, "size": 9},
                name=label,
            )
        )
    fig.add_vline(x=0, line_color="#444")
    fig.update_layout(
        xaxis_title="bits/token − random (below 0: better than random)",
        yaxis={"autorange": "reversed"},
        height=140 + 26 * len(table),
        margin={"t": 20},
    )
    return fig


if run_id is not None:
    start_form(run_id)
    active = validating()
    every = LIVE_EVERY_S if active else IDLE_EVERY_S
    st.fragment(live, run_every=every)(run_id, active)
    sweep_form(run_id)
    st.fragment(sweeps, run_every=every)(run_id)
