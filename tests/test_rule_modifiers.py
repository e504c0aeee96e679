"""Stratified rules, group ratio overrides and dedup, against the contract spelled out in Python."""

from __future__ import annotations

import json
import math
import random

import pandas as pd
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


# ---- dedup, on a real run's duplicate clusters --------------------------------------------------


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory):
    """A model-free run of texts with exact copies, near copies (one word changed) and unique
    texts, in three sources; a few texts are empty of words (their word score is null)."""
    from core.scoring import ScoreOptions, score_dataset
    from tests.conftest import corpus_texts

    tmp_path = tmp_path_factory.mktemp("dups")
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    base = [r["text"][:800] for r in corpus_texts(60) if len(r["text"].split()) > 60][:30]
    rows = []
    for k, text in enumerate(base):
        rows.append({"id": f"{k}", "text": text, "source": SOURCES[k % 3]})
        if k % 3 == 0:  # an exact copy, in another source
            rows.append({"id": f"{k}-copy", "text": text, "source": SOURCES[(k + 1) % 3]})
        if k % 4 == 0:  # a near copy: one word changed
            words = text.split(" ")
            words[len(words) // 2] = "CHANGED"
            rows.append({"id": f"{k}-near", "text": " ".join(words), "source": SOURCES[k % 3]})
    rows += [{"id": f"p{i}", "text": "... --- ...", "source": "docs"} for i in range(3)]
    ingest_rows(store, tmp_path, rows, id_column="id")
    run = score_dataset(store, "docs", ScoreOptions(model="none")).run_id
    clusters = store.query_df("SELECT * FROM dup_clusters WHERE run_id = ?", [run])
    id_of = dict(store.query("SELECT row_idx, sample_id FROM samples WHERE dataset = 'docs'"))
    scores = dict(store.query("SELECT sample_id, word_entropy FROM scores WHERE run_id = ?", [run]))
    group_of = {r["id"]: r["source"] for r in rows}
    return store, run, clusters, id_of, scores, group_of


def brute_force_duplicates(clusters, mode: str) -> set[str]:
    column = {"exact": "exact_cluster_id", "near": "cluster_id"}[mode]
    members: dict[int, list[str]] = {}
    for sid, cid in zip(clusters["sample_id"], clusters[column], strict=True):
        if not pd.isna(cid):
            members.setdefault(int(cid), []).append(sid)
    return {sid for ids in members.values() for sid in sorted(ids)[1:]}


@pytest.mark.parametrize("mode", ["exact", "near"])
@pytest.mark.parametrize(
    "rule",
    [
        Rule("prune-low", 0.0),
        Rule("prune-low", 0.3),
        Rule("keep-middle", 0.1, 0.2),
        Rule("prune-high", None, 0.25, stratify="source"),
        Rule("prune-low", 4.0, by="threshold"),
    ],
    ids=lambda r: r.describe(),
)
def test_dedup_then_rule_matches_brute_force(duplicated, mode, rule):
    store, run, clusters, id_of, scores, group_of = duplicated
    rule = Rule.from_dict({**rule.to_dict(), "dedup": mode})
    duplicates = brute_force_duplicates(clusters, mode)
    assert duplicates  # the corpus has copies of both kinds
    ranking, selection = rule_selection(store, run, "word_entropy", rule)
    pruned = {id_of[r] for r in selected_row_idx(ranking, selection, "pruned")}
    if rule.by == "threshold":
        expected = set(duplicates) | {
            s for s, v in scores.items() if v is not None and v < 4.0 and s not in duplicates
        }
    else:
        expected = brute_force(scores, group_of, rule, duplicates)
    assert pruned == expected
    assert selection.n_duplicates == len(duplicates)


def test_near_dedup_removes_more_than_exact_and_ratio_zero_is_plain_dedup(duplicated):
    store, run, clusters, _, _, _ = duplicated
    exact = rule_selection(store, run, "word_entropy", Rule("prune-low", 0.0, dedup="exact"))[1]
    near = rule_selection(store, run, "word_entropy", Rule("prune-low", 0.0, dedup="near"))[1]
    assert 0 < exact.n_pruned == exact.n_duplicates < near.n_pruned == near.n_duplicates
    assert near.n_pruned == len(brute_force_duplicates(clusters, "near"))


def test_cli_dry_run_and_export_with_stratify_and_dedup(duplicated, tmp_path, capsys):
    from core.cli import main

    store, run, clusters, _, scores, group_of = duplicated
    base = ["export", "--db", str(store.path), "--run", run, "--score", "word_entropy"]
    base += ["--rule", "prune-low", "--ratio", "0.2", "--stratify", "source", "--dedup", "exact"]
    assert main([*base, "--group-ratio", "code=0", "--dry-run", "--group-by", "source"]) == 0
    out = capsys.readouterr().out
    duplicates = brute_force_duplicates(clusters, "exact")
    assert f"{len(duplicates):,} of the pruned are exact duplicates" in out
    assert "within each source" in out
    out_path = tmp_path / "kept.jsonl"
    assert main([*base, "--format", "jsonl", "--out", str(out_path)]) == 0
    kept = {json.loads(line)["id"] for line in out_path.read_text().splitlines()}
    rule = Rule("prune-low", 0.2, stratify="source", dedup="exact")
    assert kept == set(scores) - brute_force(scores, group_of, rule, duplicates)
    again = tmp_path / "again.jsonl"
    manifest = str(out_path) + ".manifest.json"
    assert (
        main(["export", "--db", str(store.path), "--from-manifest", manifest, "--out", str(again)])
        == 0
    )
    assert again.read_bytes() == out_path.read_bytes()
    assert main([*base[:-2], "--group-ratio", "nope=0", "--dry-run"]) == 2
    assert "no group 'nope' in source" in capsys.readouterr().err


def test_prune_page_stratifies_deduplicates_and_validates_the_setting(duplicated, monkeypatch):
    import core.validate
    from tests.helpers_pages import by_label, open_page

    store, run, clusters, _, scores, group_of = duplicated
    started = []
    monkeypatch.setattr(core.validate, "start_job", lambda s, kind, argv, ref: started.append(argv))
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    at = open_page("4_Prune_and_Export.py")
    by_label(at.selectbox, "Rank by").set_value("word_entropy").run()
    by_label(at.selectbox, "Within each").set_value("source").run()
    by_label(at.selectbox, "Duplicates").set_value("exact").run()
    by_label(at.slider, "Prune the lowest").set_value(20.0).run()
    by_label(at.text_input, "Other ratios for some groups").set_value("code=0").run()
    assert not at.exception and not at.error
    rule = Rule(
        "prune-low", 0.2, stratify="source", group_ratios=(GroupRatio("code", 0.0),), dedup="exact"
    )
    expected = brute_force(scores, group_of, rule, brute_force_duplicates(clusters, "exact"))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pruned samples"] == f"{len(expected):,}"
    captions = " ".join(c.value for c in at.caption)
    assert "Within each source" in captions and "exact duplicates" in captions
    assert "No validation of this setting yet" in captions
    out = by_label(at.text_input, "Write to").value
    assert "within-source-overrides-code-0-dedup-exact-kept" in out
    button = next(b for b in at.button if b.label.startswith("Validate this setting"))
    assert button.disabled  # overrides cannot be validated
    by_label(at.text_input, "Other ratios for some groups").set_value("").run()
    next(b for b in at.button if b.label.startswith("Validate this setting")).click().run()
    assert not at.exception and started
    argv = started[0]
    assert argv[argv.index("--stratify") + 1] == "source" and "--quick" in argv
    assert argv[argv.index("--dedup") + 1] == "exact" and argv[argv.index("--ratios") + 1] == "0.2"


def test_prune_page_takes_a_configuration_from_a_sweep(duplicated, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    store, run, *_ = duplicated
    monkeypatch.setenv("INFOPRUNE_DB", str(store.path))
    at = AppTest.from_file(str(ROOT / "pages" / "4_Prune_and_Export.py"), default_timeout=60)
    at.session_state["prune_preset"] = {
        "run": run,
        "rule": "keep-middle",
        "score": "gzip_bits_per_byte",
        "stratify": "source",
        "low": 0.15,
        "high": 0.15,
    }
    at.run()
    assert not at.exception
    selects = {s.label: s.value for s in at.selectbox}
    assert selects["Rank by"] == "gzip_bits_per_byte" and selects["Within each"] == "source"
    assert at.radio[0].value == "keep-middle"
    assert {s.label: s.value for s in at.slider}["Prune the highest"] == 15.0
