"""Export names that say what the file holds, folders named as folders, and manifests checked
before a rebuild: a damaged field, other rows, or metadata changed under the same texts."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from core.cli import main
from core.errors import InputError
from core.export import (
    default_export_name,
    export_from_manifest,
    export_subset,
    manifest_path_for,
    pair_path,
)
from core.rules import GroupRatio, Rule
from tests.helpers_runs import ingest_rows
from tests.test_export import ROWS, make_store

RULE = Rule("prune-low", 0.25)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("names"))


def cli(store, *args) -> int:
    return main(["export", "--db", str(store.path), *args])


def run_args(run, fmt, out, *more) -> list[str]:
    rule = ["--rule", "prune-low", "--ratio", "0.25"]
    return ["--run", run, *rule, "--format", fmt, "--out", str(out), *more]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("fmt", "name", "message"),
    [
        (
            "jsonl",
            "x.parquet",
            "x.parquet ends in .parquet but the format is jsonl — name it "
            "x.jsonl or pick --format parquet",
        ),
        ("parquet", "x.jsonl", "name it x.parquet or pick --format jsonl"),
        ("parquet", "x.json", "name it x.parquet or pick --format jsonl"),
        ("parquet", "x.csv", "x.csv ends in .csv but the format is parquet — name it x.parquet"),
        ("hf", "x.parquet", "the format is hf (a folder) — name it x or pick --format parquet"),
        ("jsonl", "x.jsonl.bz2", "compressed only as .gz or .zst — name it x.jsonl.gz"),
        ("parquet", "x.parquet.gz", "a parquet export is not a .gz file — name it x.parquet"),
    ],
)
def test_an_extension_that_names_another_format_is_refused(
    scored, tmp_path, capsys, fmt, name, message
):
    store, run = scored
    assert cli(store, *run_args(run, fmt, tmp_path / name)) == 2
    assert message in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_the_page_is_told_to_choose_the_format_and_fitting_names_still_export(scored, tmp_path):
    store, run = scored
    with pytest.raises(InputError) as caught:
        export_subset(store, run, "bits_per_token", RULE, tmp_path / "x.parquet", fmt="jsonl")
    assert caught.value.ui_message.endswith("name it x.jsonl or choose the parquet format.")
    # A compressed JSONL, .json, and names without a known extension are what they say.
    for name in ("a.jsonl.gz", "b.json", "c", "d.data"):
        export_subset(store, run, "bits_per_token", RULE, tmp_path / name, fmt="jsonl")
    assert len(gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()).splitlines()) == 15


def test_a_rebuild_keeps_the_manifests_format_in_the_name(scored, tmp_path, capsys):
    store, run = scored
    export_subset(store, run, "bits_per_token", RULE, tmp_path / "first.jsonl", fmt="jsonl")
    manifest = manifest_path_for(tmp_path / "first.jsonl")
    assert cli(store, "--from-manifest", str(manifest), "--out", str(tmp_path / "r.parquet")) == 2
    err = one_error_line(capsys)
    assert "but the manifest's format is jsonl — name it r.jsonl" in err and "--format" not in err
    assert not (tmp_path / "r.parquet").exists()


@pytest.mark.parametrize(
    ("part", "name", "message"),
    [
        (
            "both",
            "y-pruned.jsonl",
            "y-pruned.jsonl ends in -pruned but it will hold the kept "
            "samples — name it y-kept.jsonl",
        ),
        ("pruned", "z-kept.jsonl", "it will hold the pruned samples — name it z-pruned.jsonl"),
        ("kept", "z-Pruned.jsonl", "it will hold the kept samples — name it z-kept.jsonl"),
    ],
)
def test_a_part_word_that_contradicts_the_rows_is_refused(
    scored, tmp_path, capsys, part, name, message
):
    store, run = scored
    assert cli(store, *run_args(run, "jsonl", tmp_path / name, "--part", part)) == 2
    assert message in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_rebuild_of_the_pruned_file_refuses_a_kept_name_and_pairs_compressed_names(
    scored, tmp_path
):
    store, run = scored
    out = tmp_path / "w.jsonl.gz"
    result = export_subset(store, run, "bits_per_token", RULE, out, fmt="jsonl", part="both")
    assert result.pair.path == tmp_path / "w-pruned.jsonl.gz"  # not w.jsonl-pruned.gz
    pruned_manifest = manifest_path_for(result.pair.path)
    with pytest.raises(InputError, match="r-kept.jsonl.gz ends in -kept but it will hold the pr"):
        export_from_manifest(store, pruned_manifest, tmp_path / "r-kept.jsonl.gz")
    export_from_manifest(store, pruned_manifest, tmp_path / "r-pruned.jsonl.gz")
    assert (tmp_path / "r-kept.jsonl.gz").exists()
    assert pair_path(tmp_path / "a-kept.jsonl.zst", "kept").name == "a-pruned.jsonl.zst"


def test_a_folder_is_named_as_a_folder_before_replace_is_suggested(scored, tmp_path):
    store, run = scored
    (tmp_path / "d.parquet").mkdir()
    for overwrite in (False, True):
        with pytest.raises(InputError, match="is a folder — a parquet export is one file"):
            export_subset(
                store, run, "bits_per_token", RULE, tmp_path / "d.parquet", overwrite=overwrite
            )
    (tmp_path / "h").mkdir()
    with pytest.raises(InputError, match="not an earlier infoprune export"):
        export_subset(store, run, "bits_per_token", RULE, tmp_path / "h", fmt="hf")


def exported_manifest(store, run, tmp_path) -> dict:
    out = tmp_path / "m.jsonl"
    export_subset(store, run, "bits_per_token", RULE, out, fmt="jsonl", overwrite=True)
    return json.loads(manifest_path_for(out).read_text())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: m.pop("selection"), "'selection' is missing or not an object"),
        (lambda m: m.update(selection=[1]), "'selection' is missing or not an object"),
        (lambda m: m["selection"].update(groups=[1]), "'selection.groups' has the wrong type"),
        (lambda m: m.update(validation="yes"), "'validation' has the wrong type (str)"),
        (lambda m: m["dataset"].update(store=5), "'dataset.store' has the wrong type (int)"),
        (lambda m: m["dataset"].update(metadata_md5="x"), "'dataset.metadata_md5' has the wr"),
    ],
)
def test_a_damaged_manifest_is_one_error_line(scored, tmp_path, capsys, damage, message):
    store, run = scored
    manifest = exported_manifest(store, run, tmp_path)
    damage(manifest)
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(manifest))
    assert cli(store, "--from-manifest", str(path), "--out", str(tmp_path / "r.jsonl")) == 2
    err = one_error_line(capsys)
    assert "is damaged" in err and message in err
    assert not (tmp_path / "r.jsonl").exists()


def test_other_rows_of_the_same_count_are_called_other_rows(scored, tmp_path):
    store, run = scored
    manifest = exported_manifest(store, run, tmp_path)
    manifest["output"]["rows_sha256"] = "0" * 64
    path = tmp_path / "altered.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(InputError) as caught:
        export_from_manifest(store, path, tmp_path / "r.jsonl")
    assert "(15, the same count, but not the same rows)" in str(caught.value)
    assert "against" not in str(caught.value)


def test_a_rebuild_refuses_when_the_metadata_changed_under_the_same_texts(tmp_path):
    store, run = make_store(tmp_path)
    first = tmp_path / "first.jsonl"
    export_subset(store, run, "bits_per_token", RULE, first, fmt="jsonl")
    old_style = json.loads(manifest_path_for(first).read_text())
    old_style["dataset"].pop("metadata_md5")  # a manifest written before it was recorded
    (tmp_path / "old.json").write_text(json.dumps(old_style))

    relabelled = [dict(r, lang="fr") if r["id"] == "doc-03" else r for r in ROWS]
    ingest_rows(store, tmp_path, relabelled, id_column="id", replace=True)  # same fingerprint
    with pytest.raises(InputError, match=r"metadata changed since this export \(column lang\)"):
        export_from_manifest(store, manifest_path_for(first), tmp_path / "again.jsonl")
    assert not (tmp_path / "again.jsonl").exists()
    export_from_manifest(store, tmp_path / "old.json", tmp_path / "old.jsonl")  # as before

    ingest_rows(store, tmp_path, ROWS, id_column="id", replace=True)  # the data it was made from
    export_from_manifest(store, manifest_path_for(first), tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == first.read_bytes()


def stratified(*overrides: GroupRatio) -> Rule:
    return Rule("prune-low", 0.2, stratify="source", group_ratios=overrides)


def name_of(rule: Rule) -> str:
    return default_export_name("docs", "bits_per_token", rule, "both", "parquet")


def test_the_default_name_spells_the_group_overrides():
    half = name_of(stratified(GroupRatio("legal", 0.5)))
    assert half.endswith("-prune-low-0.2-within-source-overrides-legal-0.5-kept.parquet")
    assert name_of(stratified(GroupRatio("legal", 0.1))) != half  # Replace would overwrite it
    two = stratified(GroupRatio("python-docs", 0.0), GroupRatio("legal", 0.4))
    assert "-overrides-legal-0.4-python-docs-0-kept" in name_of(two)  # sorted by group
    middle = Rule(
        "keep-middle", 0.1, 0.1, stratify="source", group_ratios=(GroupRatio("a", 0, 0.3),)
    )
    assert "-overrides-a-0-0.3-kept" in name_of(middle)


@pytest.mark.parametrize(
    "overrides",
    [
        [GroupRatio(f"group{i}", i / 10) for i in range(5)],  # many
        [GroupRatio("a/b c", 0.5)],  # not filesystem-safe as it is
        [GroupRatio("2024", 0.5)],  # a group name that reads as a ratio
    ],
)
def test_long_or_odd_overrides_become_a_short_stable_hash(overrides):
    name = name_of(stratified(*overrides))
    assert re.fullmatch(
        r"docs-bits_per_token-prune-low-0\.2-within-source-overrides-[0-9a-f]{10}"
        r"-kept\.parquet",
        name,
    )
    assert name == name_of(stratified(*reversed(overrides)))
    changed = [GroupRatio(overrides[0].group, 0.35), *overrides[1:]]
    assert name_of(stratified(*changed)) != name
