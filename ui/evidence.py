"""The Prune & Export page's evidence panel: what validation says about the previewed setting,
and a button that validates it in the background."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import InputError
from core.evidence import evidence_for, rule_shares
from core.rules import Rule
from core.validate import start_validation_job
from core.validation_spec import ValidateOptions, make_spec
from ui.common import show_error

SET_LABELS = {"heldout": "held-out set", "target": "target set"}


def _line(row) -> str:
    where = SET_LABELS.get(row["eval_set"], row["eval_set"])
    return (
        f"on the {where}: **{row['minus_random']:+.4f}** bits/token against a random subset "
        f"with as many tokens (95 % [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], "
        f"{int(row['seeds'])} seed{'s' if row['seeds'] != 1 else ''}) — **{row['verdict']}**"
    )


def evidence_panel(store, run_id: str, score: str, rule: Rule) -> None:
    """The validations behind RULE (or the nearest ratios), and "Validate this setting"."""
    st.markdown("##### Evidence: does this setting beat random?")
    found = evidence_for(store, run_id, score, rule)
    if not found.exact.empty:
        overall = found.exact[found.exact["group"].isna()]
        for vid, rows in overall.groupby("validation_id", sort=False):
            st.markdown(f"Validated (`{vid}`): " + "; ".join(_line(r) for _, r in rows.iterrows()))
        groups = found.exact.dropna(subset=["group", "minus_random"])
        if not groups.empty:
            with st.expander("Per group: which kinds of text it helps or hurts"):
                st.dataframe(
                    groups[
                        [
                            "eval_set",
                            "group",
                            "docs",
                            "minus_random",
                            "ci_low",
                            "ci_high",
                            "verdict",
                        ]
                    ],
                    hide_index=True,
                    width="stretch",
                    column_config={
                        "minus_random": st.column_config.NumberColumn("− random", format="%+.4f"),
                        "ci_low": st.column_config.NumberColumn("95 % from", format="%+.4f"),
                        "ci_high": st.column_config.NumberColumn("to", format="%+.4f"),
                    },
                )
    elif not found.nearest.empty:
        near = found.nearest
        st.markdown(
            "Not validated at this ratio. Nearest validated: "
            + "; ".join(
                f"{r['ratio']:.0%} " + _line(r)
                for _, r in near.iterrows()
                if not pd.isna(r["minus_random"])
            )
        )
    else:
        st.caption(
            "No validation of this setting yet. Validating retrains a small model on what it "
            "keeps and on a random subset of the same size, and compares held-out bits."
        )
    if found.running:
        st.info(f"Validating now: `{found.running[0]}` — this panel shows the result when it ends.")
        return
    _validate_button(store, run_id, score, rule)


def _validate_button(store, run_id: str, score: str, rule: Rule) -> None:
    shares = rule_shares(rule)
    reason = None
    if shares is None:
        reason = "Validations test ratios: switch “Set by” to ratio."
    elif rule.group_ratios:
        reason = "Per-group ratio overrides cannot be validated yet: remove them to validate."
    elif not 0 < sum(shares) < 1:
        reason = "Choose a ratio above 0 to validate."
    clicked = st.button(
        "Validate this setting (quick: one seed, about two minutes)",
        disabled=reason is not None,
        help=reason,
        key="validate_setting",
    )
    if reason:
        st.caption(reason)
    if not clicked:
        return
    low, high = shares
    ratios = f"{low:g}:{high:g}" if rule.kind == "keep-middle" else f"{low + high:g}"
    try:
        spec = make_spec(
            ValidateOptions(
                run_id,
                rule.kind,
                ratios,
                score=score,
                quick=True,
                stratify=rule.stratify,
                dedup=rule.dedup,
            )
        )
        vid = start_validation_job(store, spec)
    except InputError as exc:
        show_error(exc)
        return
    st.session_state["current_validation"] = vid
    st.success(f"Started `{vid}` in the background; the Validate page shows its progress.")
