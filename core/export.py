"""Writing the subset a rule keeps (or prunes), with a manifest that can rebuild it exactly.

Rows are written in source order (the dataset's row order), whatever the rule: a pruned corpus
reads like the original with rows taken out, and a rebuild from the manifest gives the same bytes
in the same order. Columns: `sample_id`, then every original column in its original order (the
text column under its own name), then with `with_scores` every stored score column.

Files appear atomically: everything is written under a temporary name beside PATH and renamed
into place at the end, so a failed export leaves nothing half-written, and a killed one leaves a
temporary that the next export into that folder removes (see `core.scratch`).

Kept and pruned together (part "both"): the kept samples go to PATH and the pruned ones to
`pair_path(PATH)` (`x.parquet` -> `x-pruned.parquet`, `x-kept.parquet` -> `x-pruned.parquet`), each
with its own manifest whose `output.pair` names the other file, its row count and hash: either
manifest rebuilds both files exactly. A manifest records the absolute store path and the dataset's
source, so a rebuild can find the store from any directory.

What an export may write over (`check_output`, shared by the CLI and the Prune & Export page):
a file the user named, with `overwrite`; never the store's own files or anything inside or above
them; never a folder, except an earlier `hf` export (it holds `HF_MARKER`) replaced by an `hf`
export with `overwrite`. It creates no folder but the default `exports/` beside the store. A name
must say what it holds: no extension of another format, no `-kept`/`-pruned` of the other part.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core import __version__, scratch
from core.datasets import DatasetInfo, get_dataset
from core.errors import InputError
from core.evidence import evidence_for
from core.groups import GroupBy, group_record, load_group_table
from core.ingest import META_KEY
from core.prune import Selection, load_ranking, rule_selection, selected_row_idx
from core.rules import Rule
from core.scores import table_columns
from core.scoring import get_run
from core.store import Store, quote_ident

FORMATS = ("jsonl", "parquet", "hf")
PARTS = ("kept", "pruned")
BOTH = "both"  # kept and pruned together: two files, each with its manifest, naming the other
ROW_ORDER = "source"  # rows keep the dataset's order (samples.row_idx)
MANIFEST_VERSION = 1
HF_MARKER = "infoprune_manifest.json"  # inside an hf export folder: it marks the folder as ours


@dataclass
class ExportResult:
    path: Path
    manifest_path: Path
    manifest: dict
    pair: ExportResult | None = None  # with part "both": the pruned file's export

    @property
    def n_rows(self) -> int:
        return self.manifest["output"]["rows"]

    def line(self) -> str:
        if self.pair is not None:
            return (
                f"exported {self.what()} to {self.path} and {self.pair.what()} to "
                f"{self.pair.path}; manifests {self.manifest_path}, {self.pair.manifest_path}"
            )
        return f"exported {self.what()} to {self.path}; manifest {self.manifest_path}"

    def what(self) -> str:
        """What the file holds: '14 kept samples (70.0% of the dataset, 130 tokens)'."""
        out = self.manifest["output"]
        sel = self.manifest["selection"]
        share = out["rows"] / max(sel["n_kept"] + sel["n_pruned"], 1)
        tokens = f", {out['tokens']:,} tokens" if out["tokens"] is not None else ""
        return f"{out['rows']:,} {out['part']} samples ({share:.1%} of the dataset{tokens})"


def manifest_path_for(out: str | os.PathLike) -> Path:
    return Path(str(out) + ".manifest.json")


def pair_path(out: str | os.PathLike, part: str) -> Path:
    """Where the other part of a kept+pruned export goes, OUT holding PART: the part word at the
    end of the name swapped (`x-kept.parquet` <-> `x-pruned.parquet`), else the other part's word
    added before the extension (`x.parquet` -> `x-pruned.parquet`, `x.jsonl.gz` ->
    `x-pruned.jsonl.gz`)."""
    out = Path(out)
    other = "pruned" if part == "kept" else "kept"
    stem, ext, compression = split_name(out.name)
    if stem.lower().endswith(f"-{part}"):
        stem = stem[: -len(part) - 1]
    return out.with_name(f"{stem}-{other}{ext}{compression}")


# What a file name's extension says it holds: a name must not say one format and hold another.
EXTENSION_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".arrow": "arrow",
    ".feather": "arrow",
}
FORMAT_EXTENSIONS = {"jsonl": ".jsonl", "parquet": ".parquet", "hf": ""}
# DuckDB compresses JSONL by these endings; under the others it would write plain text.
JSONL_COMPRESSIONS = (".gz", ".zst")
COMPRESSIONS = (*JSONL_COMPRESSIONS, ".gzip", ".zstd", ".bz2", ".xz", ".lz4", ".zip", ".7z")


def split_name(name: str) -> tuple[str, str, str]:
    """NAME as (stem, extension, compression): `x-kept.jsonl.gz` -> ('x-kept', '.jsonl', '.gz'),
    `x.data` -> ('x', '.data', ''), `folder` -> ('folder', '', '')."""
    compression = Path(name).suffix
    if compression.lower() not in COMPRESSIONS:
        compression = ""
    rest = name[: len(name) - len(compression)]
    ext = Path(rest).suffix
    return rest[: len(rest) - len(ext)], ext, compression


def _check_name(out: Path, fmt: str, part: str | None, from_manifest: bool) -> None:
    """Refuse a name whose extension, compression or part word says other than what FMT and PART
    will write there, naming the name to use instead (or the format, unless a manifest fixes it)."""
    stem, ext, compression = split_name(out.name)
    own_ext = FORMAT_EXTENSIONS[fmt]
    if compression and not (fmt == "jsonl" and compression.lower() in JSONL_COMPRESSIONS):
        if fmt == "jsonl":
            right = f"{stem}{ext or own_ext}.gz"
            why = "a jsonl export is compressed only as .gz or .zst"
        elif fmt == "hf":
            right, why = stem, "an hf export is a folder"
        else:
            right, why = f"{stem}{own_ext}", f"a {fmt} export is not a {compression} file"
        raise InputError(f"{out.name} ends in {compression} but {why} — name it {right}")
    named = EXTENSION_FORMATS.get(ext.lower())
    if named is not None and named != fmt:
        right = f"{stem}{own_ext}{compression}"
        said = "hf (a folder)" if fmt == "hf" else fmt
        whose = "the manifest's format" if from_manifest else "the format"
        message = f"{out.name} ends in {ext} but {whose} is {said} — name it {right}"
        if named in FORMATS and not from_manifest:
            raise InputError(
                f"{message} or pick --format {named}", ui=f"{message} or choose the {named} format."
            )
        raise InputError(message)
    other = {"kept": "pruned", "pruned": "kept"}.get(part)
    if other is not None and stem.lower().endswith(f"-{other}"):
        raise InputError(
            f"{out.name} ends in -{other} but it will hold the {part} samples — name it "
            f"{pair_path(out, other).name}"
        )


def _number_in_name(value: float) -> str:
    """VALUE as short as it prints (0.2), in full where that would merge two values."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _overrides_tag(rule: Rule) -> str:
    """A stratified rule's group overrides in a file name: each group and its ratio(s) while they
    are few and plain, else a short stable hash of them, so other overrides never share a name."""
    if not rule.group_ratios:
        return ""
    overrides = sorted(rule.group_ratios, key=lambda g: g.group)
    spelled = "-".join(
        "-".join([g.group, *(_number_in_name(v) for v in (g.low, g.high) if v is not None)])
        for g in overrides
    )
    # Spelled out only where it reads one way: no word of a group's name reads as a number.
    plain = all(
        re.fullmatch(r"[A-Za-z0-9_.\-]+", g.group) and not any(map(_is_number, g.group.split("-")))
        for g in overrides
    )
    if plain and len(overrides) <= 3 and len(spelled) <= 40:
        return f"-overrides-{spelled}"
    key = json.dumps([[g.group, g.low, g.high] for g in overrides])
    return f"-overrides-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def default_export_name(dataset: str, score: str, rule: Rule, part: str, fmt: str) -> str:
    """The file name the app proposes: the dataset, score, rule, ratios or thresholds, stratify
    with its overrides, dedup, and part (`docs-bits_per_token-prune-low-0.2-within-source-kept.
    parquet`); with part "both", the kept file's."""
    values = [v for v in (rule.low, rule.high) if v is not None]
    if rule.by == "ratio":
        tag = "-".join(_number_in_name(v) for v in values)
    else:
        sides = [("below", rule.low), ("above", rule.high)]
        tag = "-".join(f"{side}-{_number_in_name(v)}" for side, v in sides if v is not None)
    if rule.stratify:
        tag += f"-within-{rule.stratify}" + _overrides_tag(rule)
    if rule.dedup:
        tag += f"-dedup-{rule.dedup}"
    name = f"{dataset}-{score}-{rule.kind}-{tag}-{'kept' if part == BOTH else part}"
    return re.sub(r"[^\w.\-]+", "-", name) + FORMAT_EXTENSIONS.get(fmt, f".{fmt}")


@dataclass
class _Plan:
    """What an export will write: the rows, chosen before any file is touched."""

    run: dict
    info: DatasetInfo
    score: str
    rule: Rule
    part: str
    selection: Selection
    row_idx: np.ndarray  # ascending: source order
    tokens: int | None
    nbytes: int

    @property
    def rows_sha256(self) -> str:
        return hashlib.sha256(self.row_idx.astype("<i8").tobytes()).hexdigest()


def _plan(store: Store, run_id: str, score: str, rule: Rule, part: str) -> _Plan:
    if part not in PARTS:
        raise InputError(f"unknown part '{part}' — use kept, pruned or both")
    ranking, selection = rule_selection(store, run_id, score, rule)
    rows = np.sort(selected_row_idx(ranking, selection, part))
    if part == "kept":
        tokens, nbytes = selection.kept_tokens, selection.kept_bytes
    else:
        tokens = selection.total_tokens - selection.kept_tokens
        nbytes = selection.total_bytes - selection.kept_bytes
    return _Plan(
        run=get_run(store, run_id),
        info=get_dataset(store, ranking.dataset),
        score=score,
        rule=rule,
        part=part,
        selection=selection,
        row_idx=rows,
        tokens=tokens if selection.has_tokens else None,
        nbytes=nbytes,
    )


def export_subset(
    store: Store,
    run_id: str,
    score: str,
    rule: Rule,
    out: str | os.PathLike,
    fmt: str = "parquet",
    part: str = "kept",
    with_scores: bool = False,
    overwrite: bool = False,
    group_by: GroupBy | None = None,
) -> ExportResult:
    """Write the PART of RUN that RULE keeps or prunes (ranked by SCORE) to OUT, with a manifest.

    PART "both": the kept samples to OUT and the pruned ones to `pair_path(OUT, "kept")`. With
    GROUP_BY the manifest records the per-group counts (`selection.groups`).
    """
    parts = PARTS if part == BOTH else (part,)
    outs = _outputs(store, out, fmt, overwrite, parts)
    plans = [_plan(store, run_id, score, rule, p) for p in parts]
    groups = None
    if group_by is not None:  # before anything is written: an unknown column writes nothing
        ranking = load_ranking(store, run_id, score)
        table = load_group_table(store, ranking, plans[0].selection, group_by)
        groups = group_record(table, group_by)
    backing = evidence_for(store, run_id, score, rule).best
    return _write(store, plans, outs, fmt, with_scores, groups=groups, validation=backing)


def _outputs(
    store: Store, out, fmt: str, overwrite: bool, parts: tuple[str, ...], from_manifest=False
) -> list[Path]:
    """OUT for PARTS[0], and with two parts the other's path beside it (`pair_path`), each checked
    by `check_output` against the part it will hold."""
    out = check_output(store, out, fmt, overwrite, parts[0], from_manifest)
    if len(parts) == 1:
        return [out]
    pair = check_output(store, pair_path(out, parts[0]), fmt, overwrite, parts[1], from_manifest)
    return [out, pair]


def export_from_manifest(
    store: Store, manifest: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False
) -> ExportResult:
    """Rebuild the subset MANIFEST describes, identical rows in identical order, at OUT.

    Refuses when the dataset or the run is no longer what the manifest was written from.
    """
    spec = read_manifest(manifest)
    output = spec["output"]
    pair = output.get("pair")
    parts = (output["part"],) + ((pair["part"],) if pair is not None else ())
    outs = _outputs(store, out, output["format"], overwrite, parts, from_manifest=True)
    ds, run_spec = spec["dataset"], spec["run"]
    try:
        info = get_dataset(store, ds["name"])
    except InputError as exc:
        raise InputError(f"cannot rebuild {manifest}: {exc}") from exc
    if info.fingerprint != ds["fingerprint"]:
        raise InputError(
            f"cannot rebuild {manifest}: dataset '{ds['name']}' changed since the export "
            f"(fingerprint {ds['fingerprint'][:12]} -> {info.fingerprint[:12]})"
        )
    recorded = ds.get("metadata_md5")
    now = None
    if recorded is not None:  # manifests from before it was recorded: ids and texts only
        now = metadata_digests(store, info)
        changed = sorted(c for c in recorded.keys() | now.keys() if recorded.get(c) != now.get(c))
        if changed:
            raise InputError(
                f"cannot rebuild {manifest}: the dataset's metadata changed since this export "
                f"(column{'s' if len(changed) > 1 else ''} {', '.join(changed)}) — the rows "
                "would differ from the export's: ingest the data it was made from, or export anew"
            )
    try:
        run = get_run(store, run_spec["run_id"])
    except InputError as exc:
        raise InputError(f"cannot rebuild {manifest}: {exc}") from exc
    for key in ("config_key", "model_hash", "settings", "fingerprint"):
        if run[key] != run_spec[key]:
            raise InputError(
                f"cannot rebuild {manifest}: run {run_spec['run_id']} changed since the export "
                f"({key} differs)"
            )
    rule = Rule.from_dict(spec["rule"])
    plans = []
    for part in [output] + ([pair] if pair is not None else []):
        plan = _plan(store, run_spec["run_id"], spec["score"], rule, part["part"])
        if plan.rows_sha256 != part["rows_sha256"]:
            n = len(plan.row_idx)
            counts = (
                f"{n:,}, the same count, but not the same rows"
                if n == part["rows"]
                else f"{n:,} rows against {part['rows']:,}"
            )
            raise InputError(
                f"cannot rebuild {manifest}: the rule now selects other {part['part']} rows "
                f"than the export held ({counts})"
            )
        plans.append(plan)
    return _write(
        store,
        plans,
        outs,
        output["format"],
        output["with_scores"],
        Path(manifest),
        groups=spec["selection"].get("groups"),
        validation=spec.get("validation"),
        metadata=now,
    )


def metadata_digests(store: Store, info: DatasetInfo) -> dict[str, str]:
    """Each metadata column's hash over every sample (md5 of id and value, XOR-ed): the dataset's
    fingerprint covers only ids and texts, but an export writes the metadata too."""
    columns = [c["name"] for c in info.columns if c["name"] != info.text_column]
    if not columns:
        return {}
    key = f"m.{quote_ident(META_KEY)}"
    hashes = ", ".join(
        f"bit_xor(md5_number({key} || chr(31) || "
        f"coalesce('v' || CAST(m.{quote_ident(c)} AS VARCHAR), 'null')))"
        for c in columns
    )
    with store.connect() as con:
        row = con.execute(f"SELECT {hashes} FROM {quote_ident(info.meta_table)} m").fetchone()
    return {c: f"{int(v or 0):032x}" for c, v in zip(columns, row, strict=True)}


def read_manifest(path: str | os.PathLike) -> dict:
    """A manifest whose structure is checked: a damaged one is an InputError, never a crash."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"manifest {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path} is a folder, not a manifest file") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a JSON manifest ({exc})") from exc
    if not isinstance(spec, dict) or spec.get("manifest_version") != MANIFEST_VERSION:
        raise InputError(f"{path} is not an infoprune export manifest (version {MANIFEST_VERSION})")
    problem = _manifest_problem(spec)
    if problem:
        raise InputError(f"manifest {path} is damaged: {problem} — use the file the export wrote")
    return spec


# Each section's required fields and their JSON types (None: JSON null allowed).
_MANIFEST_FIELDS = {
    "dataset": {"name": (str,), "fingerprint": (str,)},
    "run": {
        "run_id": (str,),
        "config_key": (str,),
        "fingerprint": (str,),
        "settings": (dict,),
        "model_hash": (str, type(None)),
    },
    "rule": {"kind": (str,), "by": (str,)},
    "selection": {},
    "output": {
        "format": (str,),
        "part": (str,),
        "with_scores": (bool,),
        "rows": (int,),
        "rows_sha256": (str,),
    },
}

# Optional values (JSON null allowed) that a rebuild reads or copies into its own manifest.
_OPTIONAL_FIELDS = {
    ("dataset", "store"): str,
    ("dataset", "metadata_md5"): dict,
    ("selection", "groups"): dict,
    (None, "validation"): dict,
}


def _manifest_problem(spec: dict) -> str | None:
    """What is wrong with a manifest's structure, or None."""
    if not isinstance(spec.get("score"), str):
        return "'score' must be a score name"
    for section, fields in _MANIFEST_FIELDS.items():
        value = spec.get(section)
        if not isinstance(value, dict):
            return f"'{section}' is missing or not an object"
        for name, types in fields.items():
            if name not in value:
                return f"'{section}.{name}' is missing"
            field = value[name]
            if not isinstance(field, types) or (isinstance(field, bool) and bool not in types):
                return f"'{section}.{name}' has the wrong type ({type(field).__name__})"
    for (section, name), kind in _OPTIONAL_FIELDS.items():
        value = (spec if section is None else spec[section]).get(name)
        if value is not None and not isinstance(value, kind):
            where = name if section is None else f"{section}.{name}"
            return f"'{where}' has the wrong type ({type(value).__name__})"
    output = spec["output"]
    if output["format"] not in FORMATS:
        return f"'output.format' is '{output['format']}', not one of {', '.join(FORMATS)}"
    if output["part"] not in PARTS:
        return f"'output.part' is '{output['part']}', not one of {', '.join(PARTS)}"
    pair = output.get("pair")
    if pair is not None:
        if not isinstance(pair, dict) or pair.get("part") not in set(PARTS) - {output["part"]}:
            return "'output.pair' must name the other part (kept or pruned)"
        if not isinstance(pair.get("rows"), int) or not isinstance(pair.get("rows_sha256"), str):
            return "'output.pair' needs 'rows' and 'rows_sha256'"
    return None


def default_export_dir(store: Store) -> Path:
    """Where the app proposes exports: `exports/` beside the store, created on first use."""
    return store.path.expanduser().resolve().parent / "exports"


def check_output(
    store: Store,
    out: str | os.PathLike,
    fmt: str,
    overwrite: bool,
    part: str | None = None,
    from_manifest: bool = False,
) -> Path:
    """OUT as a path that an export may write (holding PART, when given), else an InputError saying
    what to choose instead (FROM_MANIFEST: the format is the manifest's, not a choice).

    The one check of an export's destination, for the CLI and the Prune & Export page alike.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format '{fmt}' — use {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    if not out.name or out.name in (".", ".."):
        raise InputError("--out needs a file or directory name", ui="Give a file name to write to.")
    manifest = manifest_path_for(out)
    for target in (out, manifest):
        store.refuse_own_path(target)
    _check_name(out, fmt, part, from_manifest)
    # A folder first: "Replace" would not help, so asking for it would be the wrong advice.
    if out.is_dir():
        if fmt != "hf":
            raise InputError(
                f"{out} is a folder — a {fmt} export is one file: give a file name",
                ui=f"{out} is a folder — a {fmt} export is one file: give a file name.",
            )
        if not is_previous_export(out):
            raise InputError(
                f"{out} is a folder that is not an earlier infoprune export — folders are "
                "never replaced: choose a new name"
            )
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise InputError(
            f"{out} already exists — pass --overwrite to replace it",
            ui=f"{out} already exists — tick “Replace it if it exists” to replace it.",
        )
    if manifest.is_dir():
        raise InputError(f"{manifest} is a folder — choose another output name")
    if (manifest.exists() or manifest.is_symlink()) and not overwrite:
        raise InputError(
            f"{manifest} already exists — pass --overwrite to replace it",
            ui=f"{manifest} already exists — tick “Replace it if it exists” to replace it.",
        )
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"{parent} is not a folder — choose another output path")
    if not parent.exists() and parent.resolve() != default_export_dir(store):
        raise InputError(f"folder {parent} does not exist — create it first")
    return out


def is_previous_export(folder: Path) -> bool:
    """True for a folder an `hf` export wrote: it holds our marker, or our manifest sits beside it
    and names it (exports written before the marker existed)."""
    if (folder / HF_MARKER).is_file():
        return True
    try:
        spec = read_manifest(manifest_path_for(folder))
    except InputError:
        return False
    out = spec["output"]
    return out["format"] == "hf" and Path(str(out.get("path", ""))).resolve() == folder.resolve()


def output_columns(info: DatasetInfo, with_scores: bool) -> list[tuple[str, str]]:
    """(name, SQL expression) of each exported column, in order."""
    original = [c["name"] for c in info.columns]
    cols = [] if "sample_id" in original else [("sample_id", "x.sample_id")]
    for name in original:
        source = "x.text" if name == info.text_column else f"m.{quote_ident(name)}"
        cols.append((name, source))
    if with_scores:
        for name in table_columns():
            if name in original or name == "sample_id":
                raise InputError(
                    f"the dataset has its own column '{name}', which a score column would "
                    "overwrite — export without --with-scores",
                    ui=f"The dataset has its own column '{name}', which a score column would "
                    "overwrite — untick “Add the score columns”.",
                )
            cols.append((name, f"s.{quote_ident(name)}"))
    return cols


def _write(
    store: Store,
    plans: list[_Plan],
    outs: list[Path],
    fmt: str,
    with_scores: bool,
    rebuilt_from: Path | None = None,
    groups: dict | None = None,
    validation: dict | None = None,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Each plan's rows to its OUT, with its manifest; two plans are the two parts of one export,
    each manifest naming the other (`output.pair`). Files are renamed into place only once all
    are written."""
    started = time.monotonic()
    cols = output_columns(plans[0].info, with_scores)
    tmps = []
    try:
        for plan, out in zip(plans, outs, strict=True):
            out.parent.mkdir(exist_ok=True)  # only the default exports folder can be missing here
            scratch.sweep(out.parent)  # what killed exports left in this folder
            tmps.append(out.parent / scratch.temp_name(out.name))
            _write_rows(store, plan, cols, tmps[-1], fmt, with_scores)
        manifests = [
            _manifest(plan, out, fmt, with_scores, cols, rebuilt_from)
            for plan, out in zip(plans, outs, strict=True)
        ]
        if metadata is None:  # a rebuild passes the digests it checked
            metadata = metadata_digests(store, plans[0].info)
        for manifest, other, other_out in zip(manifests, plans[::-1], outs[::-1], strict=True):
            manifest["dataset"]["store"] = str(store.path.expanduser().resolve())
            manifest["dataset"]["metadata_md5"] = metadata
            manifest["seconds"] = round(time.monotonic() - started, 3)
            if groups is not None:
                manifest["selection"]["groups"] = groups
            # The validation that backs this very rule, if one was run (core/evidence.py).
            manifest["validation"] = validation
            if len(plans) == 2:
                manifest["output"]["pair"] = {
                    "part": other.part,
                    "path": str(other_out),
                    "manifest": str(manifest_path_for(other_out)),
                    "rows": int(len(other.row_idx)),
                    "rows_sha256": other.rows_sha256,
                    "note": "exported together: --from-manifest with either manifest rebuilds "
                    "both files, the other named by swapping -kept/-pruned",
                }
        manifest_tmps = []
        for manifest, tmp in zip(manifests, tmps, strict=True):
            text = json.dumps(manifest, indent=2, ensure_ascii=False, default=str)
            if fmt == "hf":
                (tmp / HF_MARKER).write_text(text)
            manifest_tmps.append(tmp.with_name(tmp.name + ".manifest"))
            manifest_tmps[-1].write_text(text)
        for tmp, out in zip(tmps, outs, strict=True):
            _replace(tmp, out)
        for manifest_tmp, out in zip(manifest_tmps, outs, strict=True):
            os.replace(manifest_tmp, manifest_path_for(out))
    finally:
        for tmp in tmps:
            for leftover in tmp.parent.iterdir():
                if leftover.name.startswith(tmp.name):
                    scratch.remove(leftover)
    results = [
        ExportResult(out, manifest_path_for(out), manifest)
        for out, manifest in zip(outs, manifests, strict=True)
    ]
    if len(results) == 2:
        results[0].pair = results[1]
    return results[0]


def _write_rows(store: Store, plan: _Plan, cols, tmp: Path, fmt: str, with_scores: bool) -> None:
    """PLAN's rows, columns COLS, in source order, to TMP (a file, or an hf folder)."""
    select_list = ", ".join(f"{expr} AS {quote_ident(name)}" for name, expr in cols)
    scores_join = "LEFT JOIN scores s ON s.run_id = ? AND s.sample_id = x.sample_id "
    query = (
        f"SELECT {select_list} FROM samples x "
        f"JOIN {quote_ident(plan.info.meta_table)} m ON m.{quote_ident(META_KEY)} = x.sample_id "
        + (scores_join if with_scores else "")
        # The chosen rows as a bitmask over row_idx: a filter inside the scan, where a join with
        # the list of rows would read and shuffle every text first.
        + "WHERE x.dataset = ? AND get_bit(?::BIT, x.row_idx::INTEGER) = 1 ORDER BY x.row_idx"
    )
    params = ([plan.run["run_id"]] if with_scores else []) + [plan.info.name, _bitmask(plan)]
    with store.connect() as con:
        parquet_tmp = tmp if fmt != "hf" else tmp.with_name(tmp.name + ".parquet")
        fmt_sql = "json" if fmt == "jsonl" else "parquet"
        written = con.execute(
            f"COPY ({query}) TO ? (FORMAT {fmt_sql})", [*params, str(parquet_tmp)]
        ).fetchall()[0][0]
    if written != len(plan.row_idx):
        raise InputError(
            f"dataset '{plan.info.name}' is missing rows ({written} of "
            f"{len(plan.row_idx)} found) — ingest it again"
        )
    if fmt == "hf":
        parquet_to_hf(parquet_tmp, tmp)


def _bitmask(plan: _Plan) -> str:
    """'0'/'1' for each row_idx of the source up to its last row: 1 for each row to write."""
    mask = np.zeros(plan.info.n_samples + plan.info.n_skipped, dtype=np.uint8)
    mask[plan.row_idx] = 1
    return (mask + ord("0")).tobytes().decode("ascii")


def parquet_to_hf(parquet: Path, directory: Path) -> None:
    """A `datasets.load_from_disk` directory, built from the Parquet file without loading it all."""
    import datasets

    cache = directory.with_name(directory.name + ".cache")
    quiet_before = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # the export prints its own one-line summary
    try:
        ds = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(cache), keep_in_memory=False)
        ds.save_to_disk(str(directory))
        del ds
    finally:
        if not quiet_before:
            datasets.enable_progress_bars()


def _replace(tmp: Path, out: Path) -> None:
    """Move TMP to OUT. A file is replaced in one rename; a folder (an earlier hf export, or a file
    where a folder goes) is set aside under a temporary name first and deleted after."""
    if out.is_dir() or (tmp.is_dir() and (out.exists() or out.is_symlink())):
        aside = out.parent / scratch.temp_name(out.name + ".old")
        os.replace(out, aside)
        os.replace(tmp, out)
        scratch.remove(aside)
    else:
        os.replace(tmp, out)


def _manifest(
    plan: _Plan, out: Path, fmt: str, with_scores: bool, cols, rebuilt_from: Path | None
) -> dict:
    run = plan.run
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "infoprune_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": {
            "name": plan.info.name,
            "fingerprint": plan.info.fingerprint,
            "source": plan.info.source,
            "n_samples": plan.info.n_samples,
        },
        "run": {
            "run_id": run["run_id"],
            "model": run["model"],
            "model_hash": run["model_hash"],
            "engine": run["engine"],
            "settings": run["settings"],
            "config_key": run["config_key"],
            "fingerprint": run["fingerprint"],
            "finished_at": run["finished_at"],
        },
        "score": plan.score,
        "rule": {**plan.rule.to_dict(), "description": plan.rule.describe()},
        "selection": plan.selection.to_dict(),
        "output": {
            "path": str(out),
            "format": fmt,
            "part": plan.part,
            "with_scores": with_scores,
            "order": ROW_ORDER,
            "columns": [name for name, _ in cols],
            "rows": int(len(plan.row_idx)),
            "tokens": plan.tokens,
            "bytes": plan.nbytes,
            "rows_sha256": plan.rows_sha256,
        },
    }
    if rebuilt_from is not None:
        manifest["rebuilt_from"] = str(rebuilt_from)
    return manifest
