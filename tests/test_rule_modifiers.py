"""Stratified rules, group ratio overrides and dedup, against the contract spelled out in Python."""

from __future__ import annotations

import json
import math
import random

import pytest

from core.errors import InputError
from core.export import export_from_manifest, export_subset
from core.prune import (
    kept_curve,
    load_ranking,
    load_rule_inputs,
    prune_preview,
    rule_selection,
    select,
    selected_row_idx,
)
from core.rules import GroupRatio, Rule, rule_from_args
from core.store import Store
from tests.helpers_runs import add_done_run, ingest_rows

SOURCES = ["docs", "code", "licence", None]  # None: a null value, its own group


def id_key(sid: str):
    return (0, int(sid), sid) if sid.lstrip("-").isdigit() else (1, 0, sid)


def brute_force(
    scores: dict[str, float | None],
    group_of: dict[str, str | None],
    rule: Rule,
    duplicates: set[str] = frozenset(),
) -> set[str]:
    """The contract of core/rules.py in plain Python: duplicates first, then per group."""
    pruned = set(duplicates)
    ranked = sorted(
        (
            sid
            for sid, s in scores.items()
            if s is not None and not math.isnan(s) and sid not in duplicates
        ),
        key=lambda sid: (scores[sid], id_key(sid)),
    )
    groups: dict[str, list[str]] = {}
    for sid in ranked:
        label = (group_of[sid] if group_of[sid] is not None else "(none)") if rule.stratify else ""
        groups.setdefault(label, []).append(sid)
    for label, members in groups.items():
        low, high = rule.ratios_of(label) if rule.stratify else (rule.low, rule.high)
        n = len(members)
        k_low = math.floor(low * n + 0.5) if low is not None else 0
        k_high = min(math.floor(high * n + 0.5) if high is not None else 0, n - k_low)
        pruned |= set(members[:k_low]) | set(members[n - k_high :])
    return pruned


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """60 samples in 4 groups (one null) with tied scores, numeric and text ids, 5 unscored."""
    tmp_path = tmp_path_factory.mktemp("grouped")
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    rnd = random.Random(5)
    ids = [str(i) for i in range(50)] + ["a", "b", "c10", "c9", "07", "7x", "-3", "zz", "10b", "x"]
    rnd.shuffle(ids)
    group_of = {i: SOURCES[k % 4] if k < 57 else "docs" for k, i in enumerate(ids)}
    rows = [{"id": i, "text": f"text of {i} " * 3, "source": group_of[i]} for i in ids]
    ingest_rows(store, tmp_path, rows, id_column="id")
    scores: dict[str, float | None] = {i: float(rnd.choice([1, 2, 2, 3, 5, 8])) for i in ids}
    for i in ids[:4]:
        scores[i] = None
    scores[ids[4]] = math.nan
    run = add_done_run(
        store,
        "docs",
        {
            i: {"bits_per_token": s, "n_tokens": 10, "n_bytes": 12}
            for i, s in scores.items()
            if i != ids[5]
        },
    )
    scores[ids[5]] = None
    return store, run, scores, group_of


def pruned_ids(store: Store, run: str, rule: Rule) -> tuple[set[str], set[str]]:
    ranking, selection = rule_selection(store, run, "bits_per_token", rule)
    id_of = dict(store.query("SELECT row_idx, sample_id FROM samples WHERE dataset = 'docs'"))
    pruned = {id_of[r] for r in selected_row_idx(ranking, selection, "pruned")}
    kept = {id_of[r] for r in selected_row_idx(ranking, selection, "kept")}
    assert not pruned & kept and len(pruned) + len(kept) == 60
    assert selection.n_pruned == len(pruned) and selection.n_kept == len(kept)
    return pruned, kept


@pytest.mark.parametrize(
    "rule",
    [
        Rule("prune-low", 0.25, stratify="source"),
        Rule("prune-low", 0.5, stratify="source"),
        Rule("prune-low", 0.07, stratify="source"),  # rounds to 1 in some groups, 0 in others
        Rule("prune-high", None, 0.3, stratify="source"),
        Rule("keep-middle", 0.1, 0.2, stratify="source"),
        Rule("keep-middle", 0.5, 0.5, stratify="source"),  # the high tail gets what low left
        Rule("prune-low", 1.0, stratify="source"),
        Rule(
            "prune-low",
            0.4,
            stratify="source",
            group_ratios=(GroupRatio("docs", 0.0), GroupRatio("(none)", 1.0)),
        ),
        Rule(
            "keep-middle", 0.1, 0.1, stratify="source", group_ratios=(GroupRatio("code", 0.3, 0.0),)
        ),
    ],
    ids=lambda r: r.describe(),
)
def test_stratified_selection_matches_brute_force(grouped, rule):
    store, run, scores, group_of = grouped
    pruned, kept = pruned_ids(store, run, rule)
    assert pruned == brute_force(scores, group_of, rule)
    unscored = {i for i, s in scores.items() if s is None or math.isnan(s)}
    assert unscored <= kept


def test_stratify_keeps_each_groups_share_where_the_plain_rule_does_not(grouped):
    store, run, scores, group_of = grouped
    pruned, _ = pruned_ids(store, run, Rule("prune-low", 0.5, stratify="source"))
    for label in SOURCES:
        members = [
            i for i in scores if group_of[i] == label and scores[i] and scores[i] == scores[i]
        ]
        share = sum(i in pruned for i in members) / len(members)
        assert abs(share - 0.5) <= 0.5 / len(members) + 1e-9, label


def test_a_zero_override_keeps_the_whole_group(grouped):
    store, run, _, group_of = grouped
    rule = Rule("prune-low", 0.6, stratify="source", group_ratios=(GroupRatio("licence", 0.0),))
    pruned, _ = pruned_ids(store, run, rule)
    assert pruned and not any(group_of[i] == "licence" for i in pruned)


def test_stratified_rule_by_a_url_domain(store, tmp_path):
    urls = ["https://a.org/x", "http://www.a.org/y", "https://b.net/z", None]
    rows = [{"id": str(i), "text": f"t{i}", "url": urls[i % 4]} for i in range(40)]
    ingest_rows(store, tmp_path, rows, id_column="id")
    scores = {str(i): {"bits_per_token": float(i % 7), "n_bytes": 2} for i in range(40)}
    run = add_done_run(store, "docs", scores)
    rule = Rule("prune-low", 0.5, stratify="url:domain")
    ranking, selection = rule_selection(store, run, "bits_per_token", rule)
    inputs = load_rule_inputs(store, ranking, rule)
    assert sorted(inputs.labels) == ["(none)", "a.org", "b.net"]
    assert selection.n_pruned == 10 + 5 + 5  # 20 of a.org, 10 of b.net, 10 without a host


def test_modified_rules_say_what_is_wrong(grouped):
    store, run, _, _ = grouped
    with pytest.raises(InputError, match="no group 'nope' in source; its groups are"):
        rule_selection(
            store,
            run,
            "bits_per_token",
            Rule("prune-low", 0.2, stratify="source", group_ratios=(GroupRatio("nope", 0.1),)),
        )
    with pytest.raises(InputError, match="unknown metadata column 'kind'"):
        rule_selection(store, run, "bits_per_token", Rule("prune-low", 0.2, stratify="kind"))
    with pytest.raises(InputError, match="use ratios"):
        Rule("prune-low", 2.0, by="threshold", stratify="source")
    with pytest.raises(InputError, match="need a stratify column"):
        Rule("prune-low", 0.2, group_ratios=(GroupRatio("docs", 0.1),))
    with pytest.raises(InputError, match="dedup is one of exact, near"):
        Rule("prune-low", 0.2, dedup="fuzzy")
    with pytest.raises(InputError, match="GROUP=R"):
        rule_from_args("prune-low", ratio=0.2, stratify="source", group_ratios=["docs"])
    with pytest.raises(InputError, match="GROUP=LOW:HIGH"):
        rule_from_args(
            "keep-middle", ratio_low=0.1, ratio_high=0.1, stratify="s", group_ratios=["a=0.1"]
        )
    with pytest.raises(InputError, match="between 0 and 1"):
        rule_from_args("prune-low", ratio=0.2, stratify="source", group_ratios=["docs=1.5"])
    with pytest.raises(InputError, match="needs its groups"):
        select(load_ranking(store, run, "bits_per_token"), Rule("prune-low", 0.2, stratify="x"))


def test_modified_rule_round_trips_through_a_dict_and_describes_itself():
    rule = rule_from_args(
        "keep-middle",
        ratio_low=0.1,
        ratio_high=0.2,
        stratify="url:domain",
        group_ratios=["a.org=0:0.5"],
        dedup="near",
    )
    assert Rule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    words = rule.describe()
    assert "within each url:domain" in words and "a.org" in words and "near-duplicate" in words
    assert Rule.from_dict({"kind": "prune-low", "low": 0.1}) == Rule("prune-low", 0.1)


def test_preview_and_curve_of_a_stratified_rule(grouped):
    store, run, scores, group_of = grouped
    rule = Rule("prune-low", 0.3, stratify="source")
    preview = prune_preview(store, run, "bits_per_token", rule, n_borderline=2, n_random=4)
    assert preview.selection.n_pruned == len(brute_force(scores, group_of, rule))
    assert len(preview.random_pruned) == 4
    assert set(preview.borderline["side"]) == {"pruned", "kept"}
    curve = kept_curve(preview.ranking, rule, inputs=preview.inputs).set_index("pruned_ratio")
    assert curve.loc[0.3, "current"] and curve.loc[0.0, "kept_bytes_share"] == 1.0
    assert curve["kept_bytes_share"].is_monotonic_decreasing


def test_export_of_a_stratified_rule_rebuilds_from_its_manifest(grouped, tmp_path):
    store, run, scores, group_of = grouped
    rule = Rule(
        "prune-high", None, 0.3, stratify="source", group_ratios=(GroupRatio("code", None, 0),)
    )
    out = tmp_path / "kept.jsonl"
    export_subset(store, run, "bits_per_token", rule, out, fmt="jsonl", part="pruned")
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["rule"]["stratify"] == "source"
    assert manifest["rule"]["group_ratios"] == [{"group": "code", "low": None, "high": 0}]
    written = {json.loads(line)["id"] for line in out.read_text().splitlines()}
    assert written == brute_force(scores, group_of, rule)
    again = tmp_path / "again.jsonl"
    export_from_manifest(store, out.with_name(out.name + ".manifest.json"), again)
    assert again.read_bytes() == out.read_bytes()
