"""Prune & Export: pick a score and a rule, see what it keeps as the sliders move, export it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.errors import InputError
from core.export import (
    BOTH,
    FORMATS,
    PARTS,
    default_export_dir,
    default_export_name,
    export_subset,
    pair_path,
)
from core.groups import group_kept_curve, group_table, load_groups, with_groups
from core.prune import prune_preview
from core.rule_names import RULES
from core.rules import Rule, parse_group_ratio
from core.scores import (
    WEIGHTED_PREFIX,
    default_score,
    score_columns,
    score_names,
    weighted_name,
)
from core.scoring import get_run, run_score_columns
from core.store import Store
from ui.charts import cut_histogram_chart, group_share_chart, kept_curve_chart
from ui.common import (
    NO_STRATIFY,
    RULE_LABELS,
    fmt_int,
    follow_default,
    get_store,
    pick_dedup,
    pick_group_by,
    pick_run,
    pick_stratify,
    require_access,
    reset_to_default,
    show_error,
)
from ui.evidence import evidence_panel

require_access()  # first: see ui/common.py

DOWNLOAD_MAX_BYTES = 100 * 1024 * 1024
PART_LABELS = {"kept": "Kept samples", "pruned": "Pruned samples", BOTH: "Both (two files)"}


@st.cache_data(show_spinner=False, max_entries=16)
def cached_columns(db: str, run: str) -> list[str]:
    return run_score_columns(Store(db), run)


@st.cache_data(show_spinner=False, max_entries=32)
def score_range(db: str, run: str, score: str) -> tuple[float, float]:
    """Where the threshold inputs start: the range of the score's values."""
    edges = prune_preview(Store(db), run, score, Rule("prune-low", 0.0)).histogram.edges
    return (edges[0], edges[-1]) if edges else (0.0, 1.0)


def percent_slider(label: str, key: str, default: float) -> float:
    """A 0–100 % slider; returns the ratio as the decimal the slider shows (12.5 % -> 0.125).

    Its value outlives runs in which it is not drawn (Streamlit forgets the state of a widget a
    run leaves out): prune-low at 20 %, then prune-high, then keep-middle starts from 20 %."""
    remembered = f"{key}_remembered"
    value = st.session_state.get(remembered, default)
    pct = st.slider(label, 0.0, 100.0, value, 0.5, format="%.1f%%", key=key)
    st.session_state[remembered] = pct
    return round(pct / 100, 6)


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


st.title("Prune & Export")
st.caption(
    "Rank the samples by a score, choose which end to prune and how much, and see what goes "
    "before you export. Samples are ranked by (score, sample id); a ratio r of N scored samples "
    "prunes floor(r·N + 0.5) of them. Samples without a score are always kept."
)


@st.fragment
def cut_and_export() -> None:
    """Everything a ratio or threshold changes: moving them reruns this part of the page only."""
    try:
        low = high = None
        if by == "ratio":
            if kind in ("prune-low", "keep-middle"):
                low = percent_slider("Prune the lowest", "ratio_low", 10.0)
            if kind in ("prune-high", "keep-middle"):
                high = percent_slider("Prune the highest", "ratio_high", 10.0)
        else:
            lo_edge, hi_edge = score_range(db, run_id, score)
            t1, t2 = st.columns(2)
            if kind in ("prune-low", "keep-middle"):
                low = t1.number_input(
                    "Prune scores below",
                    value=lo_edge + 0.1 * (hi_edge - lo_edge),
                    format="%.4f",
                    key=f"threshold_low_{score}",
                )
            if kind in ("prune-high", "keep-middle"):
                high = t2.number_input(
                    "Prune scores above",
                    value=hi_edge - 0.1 * (hi_edge - lo_edge),
                    format="%.4f",
                    key=f"threshold_high_{score}",
                )
        rule = Rule(
            kind,
            low,
            high,
            by,
            stratify=stratify,
            group_ratios=tuple(
                parse_group_ratio(kind, part.strip())
                for part in overrides.split(",")
                if part.strip()
            ),
            dedup=dedup,
        )
        preview = prune_preview(
            store, run_id, score, rule, seed=st.session_state.get("prune_seed", 0)
        )
        sel = preview.selection
        hist = preview.histogram

        m = st.columns(6)
        # The total goes in the label: "6,737 / 8,421" does not fit a sixth of the page.
        m[0].metric(f"Kept samples (of {fmt_int(sel.n_total)})", fmt_int(sel.n_kept))
        m[1].metric("Pruned samples", fmt_int(sel.n_pruned))
        m[2].metric("Kept share of samples", pct(sel.kept_share))
        m[3].metric(
            "Kept share of tokens",
            pct(sel.kept_tokens_share),
            help="This run has no token counts (no model)."
            if not sel.has_tokens
            else f"Of the scored samples' tokens: the {fmt_int(sel.n_unscored)} unscored "
            "samples have no token count."
            if sel.n_unscored
            else None,
        )
        m[4].metric("Kept share of bytes", pct(sel.kept_bytes_share))
        m[5].metric(
            "Unscored (kept)",
            fmt_int(sel.n_unscored),
            help="Samples without a value for this score are never pruned; they are exported "
            "with the kept part.",
        )
        cut_text = []
        for tail, cut in sel.cuts.items():
            side = "lowest" if tail == "low" else "highest"
            if cut.k == 0:
                cut_text.append(f"nothing pruned from the {side} end")
            elif rule.stratify:  # no one score separates pruned from kept across groups
                cut_text.append(f"{side} {fmt_int(cut.k)} pruned")
            else:
                kept = "—" if cut.first_kept is None else f"{cut.first_kept:.4f}"
                cut_text.append(
                    f"{side} {fmt_int(cut.k)} pruned: last pruned score {cut.last_pruned:.4f}, "
                    f"first kept {kept}"
                )
        st.caption(f"{RULE_LABELS[kind].split(' (')[0]} by {score}: " + "; ".join(cut_text) + ".")
        if rule.stratify:
            st.caption(
                f"Within each {rule.stratify}: every group loses its own share, so the cut falls "
                "at another score in each group (the histogram shows no single cut)."
            )
        if rule.dedup:
            st.caption(
                f"Duplicates first: {fmt_int(sel.n_duplicates)} of the pruned samples are "
                f"{rule.dedup} duplicates (every copy but the one with the smallest sample id); "
                f"the share applies to the {fmt_int(sel.n_ranked)} scored samples left."
            )

        evidence_panel(store, run_id, score, rule)

        # Within each group the cut falls at another score: one shaded band would mislead.
        shaded = [
            (cut.line, hist.edges[0] if tail == "low" else hist.edges[-1])
            for tail, cut in sel.cuts.items()
            if hist.edges and cut.k and cut.line is not None and not rule.stratify
        ]
        st.vega_lite_chart(
            *cut_histogram_chart(
                hist, score if rule.stratify else f"{score}: pruned parts shaded", shaded
            ),
            width="stretch",
        )

        group_curve = None
        borderline, random_pruned = preview.borderline, preview.random_pruned
        if group_by is not None:
            groups = load_groups(store, run["dataset"], group_by)
            table = group_table(preview.ranking, sel, groups)
            group_curve = group_kept_curve(preview.ranking, rule, groups, inputs=preview.inputs)
            borderline = with_groups(borderline, preview.ranking, groups)
            random_pruned = with_groups(random_pruned, preview.ranking, groups)
            noun = f"{group_by.column} domain" if group_by.domain else group_by.column
            st.subheader(f"What each {noun} loses")
            st.caption(
                "The cut group by group: what each group holds and the share of it this rule "
                "prunes, the groups losing the largest share of their samples first. Unscored "
                "samples are kept."
            )
            st.vega_lite_chart(*group_share_chart(table, group_by.label), width="stretch")
            if not sel.has_tokens:
                table = table.drop(columns=["tokens", "kept_tokens", "pruned_token_share"])
            st.dataframe(
                table,
                hide_index=True,
                width="stretch",
                key="prune_groups_table",
                column_config={
                    "group": st.column_config.TextColumn(group_by.label),
                    "pruned_share": st.column_config.ProgressColumn(
                        "pruned share of samples", format="percent", min_value=0.0, max_value=1.0
                    ),
                    "kept_tokens": st.column_config.NumberColumn("kept tokens"),
                    "pruned_token_share": st.column_config.NumberColumn(
                        "pruned share of tokens", format="percent"
                    ),
                    "bytes": st.column_config.NumberColumn(format="bytes"),
                    "kept_bytes": st.column_config.NumberColumn("kept bytes", format="bytes"),
                    "pruned_byte_share": st.column_config.NumberColumn(
                        "pruned share of bytes", format="percent"
                    ),
                    "unscored": st.column_config.NumberColumn(
                        "unscored (kept)", help="Samples without a value for this score: kept."
                    ),
                },
            )

        st.subheader("At the cut")
        st.caption(
            "The samples just either side of each threshold: is the line in the right place?"
        )
        st.dataframe(
            borderline,
            hide_index=True,
            width="stretch",
            placeholder="—",
            column_config={"score": st.column_config.NumberColumn(score, format="%.4f")},
        )

        st.subheader("A random handful of what would be pruned")
        st.number_input("Seed", min_value=0, step=1, key="prune_seed")
        if random_pruned.empty:
            st.caption("Nothing is pruned.")
        else:
            st.dataframe(
                random_pruned,
                hide_index=True,
                width="stretch",
                placeholder="—",
                column_config={"score": st.column_config.NumberColumn(score, format="%.4f")},
            )

        curve = kept_curve_chart(preview.curve, group_curve, sel.has_tokens)
        st.vega_lite_chart(*curve, width="stretch")

        st.subheader("Export")
        e1, e2, e3 = st.columns([1, 2, 1])
        fmt = e1.selectbox(
            "Format",
            FORMATS,
            index=1,
            key="export_format",
            help="hf = a datasets.save_to_disk folder",
        )
        part = e2.radio(
            "Write", [*PARTS, BOTH], format_func=PART_LABELS.get, horizontal=True, key="export_part"
        )
        with_scores = e3.checkbox("Add the score columns", key="export_with_scores")
        name = default_export_name(run["dataset"], score, rule, part, fmt)
        default = str(default_export_dir(store) / name)
        typed_for = follow_default("export_out", default)
        out = st.text_input(
            "Write to",
            key="export_out",
            help="Named after the dataset, score, rule, ratios and part until you type another "
            "name. A manifest PATH.manifest.json is written beside it; the CLI rebuilds from it.",
        )
        if part == BOTH and out.strip():
            st.caption(f"The pruned samples go to `{pair_path(out.strip(), 'kept')}`.")
        if typed_for is not None and typed_for != default:
            w1, w2 = st.columns([4, 1])
            w1.warning(
                "You typed this name for other settings; these would be named "
                f"`{name}`. Check that it says what the file holds.",
                icon=":material/warning:",
            )
            w2.button(
                "Use that name",
                key="export_use_default",
                on_click=reset_to_default,
                args=["export_out"],
            )
        overwrite = st.checkbox("Replace it if it exists", key="export_overwrite")
        settings = (run_id, score, repr(rule), fmt, part, with_scores, out.strip())
        if st.button("Export", type="primary", key="export_button"):
            with st.spinner("Exporting…"):
                result = export_subset(
                    store,
                    run_id,
                    score,
                    rule,
                    out.strip(),
                    fmt=fmt,
                    part=part,
                    with_scores=with_scores,
                    overwrite=overwrite,
                    group_by=group_by,  # the manifest records what each group kept
                )
            written = [result] + ([result.pair] if result.pair else [])
            st.session_state["last_export"] = (
                [(r.what(), str(r.path)) for r in written],
                fmt,
                settings,
            )
        last = st.session_state.get("last_export")
        if last is not None and last[2] != settings:  # the notice is of other settings
            st.caption(
                f"Last export: `{last[0][0][1]}`, with other settings than these. "
                "Export again to write what the page shows now."
            )
        elif last is not None:
            written, last_fmt, _ = last
            lines = [
                f"{'and' if i else 'exported'} {w} to `{p}`" for i, (w, p) in enumerate(written)
            ]
            beside = "each with its manifest" if len(written) == 2 else "with its manifest"
            st.success(
                "  \n".join(lines) + f",  \n{beside} beside it (`PATH.manifest.json`).",
                icon=":material/check_circle:",
            )
            paths = [path for _, path in written]
            for i, file in enumerate(map(Path, paths)):
                if (
                    last_fmt != "hf"
                    and file.is_file()
                    and file.stat().st_size <= DOWNLOAD_MAX_BYTES
                ):
                    st.download_button(
                        f"Download {file.name}",
                        file.read_bytes(),
                        file_name=file.name,
                        key=f"export_download_{i}",
                    )
            both_files = "both files" if len(paths) == 2 else "it"
            st.caption(f"Rebuild {both_files} anywhere from the manifest:")
            st.code(
                f"infoprune export --from-manifest {paths[0]}.manifest.json --out PATH",
                language="bash",
            )
    except InputError as exc:
        show_error(exc)


def apply_preset(run_id: str, options: list[str]) -> None:
    """A configuration sent from elsewhere (the Validate page's sweep): set the controls to it
    once, before they are drawn."""
    preset = st.session_state.pop("prune_preset", None)
    if not preset or preset["run"] != run_id or preset["score"] not in options:
        return
    st.session_state["prune_score"] = preset["score"]
    st.session_state["prune_rule"] = preset["rule"]
    st.session_state["prune_by"] = "ratio"
    st.session_state["prune_stratify"] = preset["stratify"] or NO_STRATIFY
    low, high = preset["low"], preset["high"]
    st.session_state["ratio_low"] = round(low * 100, 4)
    st.session_state["ratio_high"] = round(high * 100, 4)


store = get_store()
db = str(store.path)
run_id = pick_run(store, key="prune_run")
if run_id is None:
    st.stop()

try:
    run = get_run(store, run_id)
    present = set(cached_columns(db, run_id))
    options = [n for n in score_names() if set(score_columns(n)) <= present]
    if not options:
        st.info("This run holds no score to rank by yet.")
        st.stop()
    if st.session_state.get("prune_score_run") != run_id or (
        st.session_state.get("prune_score") not in options
    ):  # another run: start from its default score, and from its own range of thresholds
        st.session_state["prune_score"] = default_score(options)
        st.session_state["prune_score_run"] = run_id
        for stale in [k for k in st.session_state if str(k).startswith("threshold_")]:
            del st.session_state[stale]
    apply_preset(run_id, options)
    c1, c2, c3 = st.columns([2, 1, 1])
    score = c1.selectbox(
        "Rank by",
        options,
        key="prune_score",
        help="bits_per_token is the paper's measure; weighted mixes it with word entropy.",
    )
    if score.startswith(WEIGHTED_PREFIX):
        alpha = c2.slider("Weight α of bits_per_token", 0.0, 1.0, 0.5, 0.05, key="prune_alpha")
        score = weighted_name(alpha)
    group_by = pick_group_by(store, run["dataset"], key="prune_group_by", container=c3)
    kind = st.radio("Rule", RULES, format_func=RULE_LABELS.get, horizontal=True, key="prune_rule")
    by = st.radio(
        "Set by",
        ["ratio", "threshold"],
        horizontal=True,
        key="prune_by",
        format_func={"ratio": "Share of samples", "threshold": "Score threshold"}.get,
    )
    m1, m2, m3 = st.columns([1, 1, 2])
    stratify = pick_stratify(store, run["dataset"], "prune_stratify", m1)
    dedup = pick_dedup("prune_dedup", m2)
    overrides = ""
    if stratify and by == "ratio":
        overrides = m3.text_input(
            "Other ratios for some groups",
            key="prune_group_ratios",
            placeholder="python-docs=0, copyright=0.4"
            if kind != "keep-middle"
            else "python-docs=0:0, copyright=0.2:0.1",
            help="GROUP=R, comma-separated (GROUP=LOW:HIGH for keep-middle): these groups take "
            "their own share instead of the slider's; 0 keeps the whole group.",
        )
    elif stratify:
        m3.caption(
            "“Within each” applies to shares of samples: a threshold is the same in every group."
        )
        stratify = None
    cut_and_export()

except InputError as exc:
    show_error(exc)
