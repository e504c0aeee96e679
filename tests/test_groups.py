"""Group-by: labels, domains, and what a rule prunes of each group, against a brute force."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest

from core.cli import main
from core.errors import InputError
from core.export import export_subset
from core.groups import (
    GROUP_TOP,
    MISSING,
    OTHER,
    GroupBy,
    group_case_sql,
    group_kept_curve,
    group_options,
    group_table,
    load_groups,
)
from core.ingest import META_KEY
from core.prune import load_ranking, select
from core.rules import Rule
from core.store import Store, quote_ident
from tests.helpers_runs import add_done_run, ingest_rows
from tests.test_prune import brute_force_pruned

HOSTS = [
    "https://www.Example.com/a?b=1",
    "http://user:pw@Docs.Python.org:8080/3/",
    "https://docs.python.org",
    "HTTPS://WWW.A.B/",
    "ftp://files.example.org/x",
    "https://example.com#top",
    "example.com/no-scheme",
    "not a url",
    None,
]


def oracle_domain(url: str | None) -> str | None:
    host = urlsplit(url).hostname if url else None
    if not host:
        return None
    return host.removeprefix("www.")


def oracle_labels(values: list) -> tuple[list[str], dict]:
    """Labels (top GROUP_TOP by count, ties by label; other; missing) and value -> label."""
    counts = pd.Series([v for v in values if v is not None]).value_counts()
    ranked = sorted(counts.items(), key=lambda t: (-t[1], t[0]))
    top = [v for v, _ in ranked[:GROUP_TOP]]
    labels = top + ([OTHER] if len(ranked) > GROUP_TOP else [])
    labels += [MISSING] if any(v is None for v in values) else []
    return labels, {v: (v if v in top else OTHER) for v, _ in ranked} | {None: MISSING}


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """A run over 300 rows: 26 sources (a tie at the top-20 line), nulls, URLs, skipped rows,
    tied scores, unscored samples (null, NaN, no row) and some samples without a token count."""
    tmp_path = tmp_path_factory.mktemp("groups")
    store = Store(tmp_path / "ws.duckdb", lock_timeout=30)
    rnd = random.Random(7)
    # Sources s00..s25 with counts 20, 19, ...: s19 and s20 tie, and s19 wins on its label.
    counts = [max(20 - i, 3) for i in range(26)]
    counts[20] = counts[19]
    sources = [f"s{i:02d}" for i, c in enumerate(counts) for _ in range(c)]
    sources += [None] * (300 - len(sources))
    rnd.shuffle(sources)
    rows = []
    for i, source in enumerate(sources):
        sid = str(i) if i % 7 else f"id-{i}"
        text = " " if i % 41 == 5 else "word " * rnd.randint(1, 30)
        rows.append(
            {
                "id": sid,
                "text": text,
                "source": source,
                "url": rnd.choice(HOSTS),
                "flag": rnd.random() < 0.3,
                "year": rnd.choice([2020, 2021, None]),
                "weight": rnd.random(),
            }
        )
    ingest_rows(store, tmp_path, rows, id_column="id")
    stored = [r for r in rows if r["text"].strip()]
    scores, run_rows = {}, {}
    for r in stored:
        score = rnd.choice([1.0, 2.0, 2.0, 3.0, 5.0, None, math.nan])
        scores[r["id"]] = None if score is None or math.isnan(score) else score
        if rnd.random() < 0.05:
            scores[r["id"]] = None  # never scored at all
            continue
        run_rows[r["id"]] = {
            "bits_per_token": score,
            "n_tokens": rnd.choice([None, rnd.randint(1, 50)]),
        }
    run = add_done_run(store, "docs", run_rows)
    return store, run, stored, scores, run_rows


def oracle_table(stored, scores, run_rows, values, kind, a, b) -> pd.DataFrame:
    labels, label_of = oracle_labels(values)
    pruned = brute_force_pruned(scores, kind, a, b)
    df = pd.DataFrame(
        {
            "group": [label_of[v] for v in values],
            "pruned": [r["id"] in pruned for r in stored],
            "unscored": [scores[r["id"]] is None for r in stored],
            "tokens": [(run_rows.get(r["id"], {}).get("n_tokens") or 0) for r in stored],
            "bytes": [len(r["text"].encode()) for r in stored],
        }
    )
    out = []
    for label in labels:
        g = df[df["group"] == label]
        p = g[g["pruned"]]
        out.append(
            {
                "group": label,
                "samples": len(g),
                "kept": len(g) - len(p),
                "pruned": len(p),
                "pruned_share": len(p) / len(g),
                "tokens": g["tokens"].sum(),
                "kept_tokens": g["tokens"].sum() - p["tokens"].sum(),
                "bytes": g["bytes"].sum(),
                "kept_bytes": g["bytes"].sum() - p["bytes"].sum(),
                "unscored": g["unscored"].sum(),
            }
        )
    table = pd.DataFrame(out)
    table["order"] = range(len(table))
    return table.sort_values(["pruned_share", "order"], ascending=[False, True]).drop(
        columns="order"
    )


@pytest.mark.parametrize(
    ("by", "kind", "a", "b"),
    [
        ("source", "prune-low", 0.2, 0.0),
        ("source", "keep-middle", 0.15, 0.3),
        ("source", "prune-high", 0.0, 1.0),
        ("url:domain", "prune-low", 0.45, 0.0),
        ("flag", "prune-high", 0.0, 0.1),
        ("year", "keep-middle", 0.0, 0.0),
    ],
)
def test_group_table_matches_a_direct_computation(grouped, by, kind, a, b):
    store, run, stored, scores, run_rows = grouped
    group_by = GroupBy.parse(by)
    raw = [r[group_by.column] for r in stored]
    if group_by.domain:
        values = [oracle_domain(v) for v in raw]
    else:
        # DuckDB's text of a value: booleans read true/false.
        values = [v if v is None else str(v).lower() if v in (True, False) else str(v) for v in raw]
    rule = Rule(kind, a if kind != "prune-high" else None, b if kind != "prune-low" else None)
    ranking = load_ranking(store, run, "bits_per_token")
    table = group_table(ranking, select(ranking, rule), load_groups(store, "docs", group_by))
    expected = oracle_table(stored, scores, run_rows, values, kind, a, b)
    assert list(table["group"]) == list(expected["group"])
    for column in ("samples", "kept", "pruned", "tokens", "kept_tokens", "bytes", "kept_bytes"):
        assert list(table[column]) == list(expected[column]), column
    assert list(table["unscored"]) == list(expected["unscored"])
    assert np.allclose(table["pruned_share"], expected["pruned_share"])
    assert np.allclose(table["pruned_byte_share"], 1 - expected["kept_bytes"] / expected["bytes"])
    assert table["samples"].sum() == len(stored)


def test_top_groups_break_ties_by_label_then_other_then_missing(grouped):
    store, _, stored, _, _ = grouped
    groups = load_groups(store, "docs", GroupBy("source"))
    assert groups.labels[:GROUP_TOP] == [f"s{i:02d}" for i in range(GROUP_TOP)]
    assert groups.labels[GROUP_TOP:] == [OTHER, MISSING]
    expected = oracle_labels([r["source"] for r in stored])[0]
    assert groups.labels == expected


def test_sql_groups_exactly_like_the_loaded_groups(grouped):
    store, _, _, _, _ = grouped
    info_meta = store.query("SELECT meta_table FROM datasets WHERE name = 'docs'")[0][0]
    for by in (GroupBy("source"), GroupBy("url", domain=True), GroupBy("flag")):
        groups = load_groups(store, "docs", by)
        rows = store.query(
            f"SELECT s.row_idx, {group_case_sql(by, groups.labels, f'm.{quote_ident(by.column)}')} "
            f"FROM samples s JOIN {quote_ident(info_meta)} m "
            f"ON m.{quote_ident(META_KEY)} = s.sample_id WHERE s.dataset = 'docs'"
        )
        row_idx = np.array([r[0] for r in rows])
        assert list(groups.label_of_rows(row_idx)) == [r[1] for r in rows]


def test_domains_are_lower_cased_hosts_without_www(grouped):
    store, _, _, _, _ = grouped
    labels = load_groups(store, "docs", GroupBy("url", domain=True)).labels
    assert set(labels) == {"example.com", "docs.python.org", "a.b", "files.example.org", MISSING}


def test_group_options_offer_few_valued_columns_and_url_domains(grouped):
    store, _, _, _, _ = grouped
    options = [str(o) for o in group_options(store, "docs")]
    # id (unique) and weight (a float) are not groups; url is one, and a URL column too.
    assert options == ["source", "url", "flag", "year", "url:domain"]
    assert GroupBy.parse("url:domain").label == "url (domain)"


def test_group_by_parses_and_names_unknown_columns(grouped):
    store, _, _, _, _ = grouped
    assert GroupBy.parse("source") == GroupBy("source")
    assert GroupBy.parse(" url:domain ") == GroupBy("url", True)
    assert str(GroupBy("url", True)) == "url:domain"
    with pytest.raises(InputError, match="metadata column"):
        GroupBy.parse(" ")
    with pytest.raises(InputError, match="unknown metadata column 'nope'.*source, url"):
        load_groups(store, "docs", GroupBy("nope"))
    with pytest.raises(InputError, match="not URLs"):
        load_groups(store, "docs", GroupBy("year", True))


def test_group_curve_ends_at_the_table_at_the_current_ratio(grouped):
    store, run, _, _, _ = grouped
    ranking = load_ranking(store, run, "bits_per_token")
    groups = load_groups(store, "docs", GroupBy("source"))
    rule = Rule("prune-low", 0.3)
    curve = group_kept_curve(ranking, rule, groups)
    now = curve[curve["current"]].set_index("group")
    table = group_table(ranking, select(ranking, rule), groups).set_index("group")
    assert np.allclose(now.loc[table.index, "kept_bytes_share"], 1 - table["pruned_byte_share"])
    assert np.allclose(now.loc[table.index, "kept_tokens_share"], 1 - table["pruned_token_share"])
    assert (curve[curve["pruned_ratio"] == 0]["kept_bytes_share"] == 1).all()


# ---- the CLI and the manifest ------------------------------------------------------------------


def every_path(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_dry_run_prints_the_table_and_writes_nothing(grouped, tmp_path, capsys, monkeypatch):
    store, run, _, _, _ = grouped
    monkeypatch.chdir(tmp_path)
    before = every_path(store.path.parent), every_path(tmp_path)
    base = ["export", "--db", str(store.path), "--run", run, "--score", "bits_per_token"]
    base += ["--rule", "prune-low", "--ratio", "0.2", "--dry-run"]
    assert main([*base, "--group-by", "source", "--out", "x.parquet", "--format", "parquet"]) == 0
    printed = capsys.readouterr().out.splitlines()
    ranking = load_ranking(store, run, "bits_per_token")
    selection = select(ranking, Rule("prune-low", 0.2))
    table = group_table(ranking, selection, load_groups(store, "docs", GroupBy("source")))
    assert printed[0].startswith("dry run, nothing written: prune the lowest 20.00%")
    assert f"{selection.n_pruned:,} pruned" in printed[0]
    assert printed[1].startswith("not validated: `infoprune validate` this rule")
    assert printed[3].split()[:5] == ["source", "samples", "kept", "pruned", "pruned_share"]
    for line, row in zip(printed[4:], table.to_dict("records"), strict=True):
        assert line.split()[:5] == [
            row["group"],
            str(row["samples"]),
            str(row["kept"]),
            str(row["pruned"]),
            f"{row['pruned_share']:.1%}",
        ]
    assert main(base) == 0  # without --group-by: the totals line alone, and no --out needed
    assert capsys.readouterr().out.splitlines() == printed[:2]
    assert (every_path(store.path.parent), every_path(tmp_path)) == before


def test_a_grouped_export_records_the_group_counts_and_rebuilds(grouped, tmp_path):
    store, run, _, _, _ = grouped
    rule = Rule("keep-middle", 0.1, 0.2)
    out = tmp_path / "kept.parquet"
    result = export_subset(
        store, run, "bits_per_token", rule, out, group_by=GroupBy("url", domain=True)
    )
    ranking = load_ranking(store, run, "bits_per_token")
    groups = load_groups(store, "docs", GroupBy("url", domain=True))
    table = group_table(ranking, select(ranking, rule), groups)
    recorded = json.loads(result.manifest_path.read_text())["selection"]["groups"]
    assert recorded["by"] == "url:domain"
    assert [r["group"] for r in recorded["rows"]] == list(table["group"])
    for r, (_, row) in zip(recorded["rows"], table.iterrows(), strict=True):
        assert r == {c: row[c] if c == "group" else int(row[c]) for c in r}
    assert sum(r["kept"] for r in recorded["rows"]) == result.n_rows
    again = tmp_path / "again.parquet"
    argv = ["export", "--db", str(store.path), "--from-manifest", str(result.manifest_path)]
    assert main([*argv, "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_an_unknown_group_column_fails_before_anything_is_written(grouped, tmp_path, capsys):
    store, run, _, _, _ = grouped
    out = tmp_path / "x.jsonl"
    argv = ["export", "--db", str(store.path), "--run", run, "--score", "bits_per_token"]
    argv += ["--rule", "prune-high", "--ratio", "0.1", "--format", "jsonl", "--out", str(out)]
    assert main([*argv, "--group-by", "nope"]) == 2
    assert "unknown metadata column 'nope'" in capsys.readouterr().err
    assert every_path(tmp_path) == set()


def test_a_new_ingest_of_the_same_texts_regroups_by_its_new_metadata(store, tmp_path):
    texts = [{"text": f"doc {i}", "source": "a"} for i in range(4)]
    ingest_rows(store, tmp_path, texts)
    assert load_groups(store, "docs", GroupBy("source")).labels == ["a"]
    quoted = [
        {"text": r["text"], "source": "O'Reilly" if i % 2 else None} for i, r in enumerate(texts)
    ]
    ingest_rows(store, tmp_path, quoted, replace=True)
    groups = load_groups(store, "docs", GroupBy("source"))
    assert groups.labels == ["O'Reilly", MISSING]
    assert list(groups.label_of_rows(np.arange(4))) == [MISSING, "O'Reilly"] * 2
    assert [str(o) for o in group_options(store, "docs")] == ["source"]


def test_a_column_of_distinct_urls_is_offered_by_domain_only(store, tmp_path):
    rows = [{"text": f"doc {i}", "url": f"https://www.site{i % 3}.org/page/{i}"} for i in range(10)]
    ingest_rows(store, tmp_path, rows)
    assert group_options(store, "docs") == [GroupBy("url", domain=True)]
    groups = load_groups(store, "docs", GroupBy("url", domain=True))
    assert groups.labels == ["site0.org", "site1.org", "site2.org"]
    assert list(groups.sizes) == [4, 3, 3]
