"""Build the bundled sample corpus ``sample_data/corpus.parquet``.

Run from the repository root::

    .venv/bin/python sample_data/build_corpus.py

The corpus is made only of text that is installed locally by Debian packages, so the
build needs no network. Sources (see ``sample_data/README.md`` for licences):

* ``python-docs`` -- reST sources of the Python 3.11 documentation
  (``/usr/share/doc/python3.11/html/_sources/**/*.rst.txt``, Debian ``python3.11-doc``),
  split into sections at reST headings.
* ``fortunes`` -- the fortune cookie files in ``/usr/share/games/fortunes`` (Debian
  ``fortunes``/``fortunes-min``), split on lines holding only ``%``; every
  ``FORTUNE_STRIDE``-th quotation of each file is kept.
* ``copyright`` -- every ``/usr/share/doc/<pkg>/copyright`` file, one document each,
  verbatim (files larger than ``MAX_COPYRIGHT_BYTES`` are skipped).
* ``changelog`` -- the first entries of ``/usr/share/doc/<pkg>/changelog.Debian.gz``,
  cut at an entry boundary after at most ``CHANGELOG_BUDGET`` characters (changelogs whose
  first entry alone exceeds ``MAX_CHANGELOG_CHARS`` are skipped).

Text is kept exactly as in the source; the only processing is splitting (and, for
changelogs, keeping a prefix that ends at an entry boundary). Everything is read in sorted
order and there is no randomness, so the output is a function of the installed files.
The set of installed Debian packages differs between machines: the corpus was built once
and committed; the package versions read are stored in the parquet metadata
(key ``infoprune.build``) and printed.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PYDOC_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
FORTUNE_ROOT = Path("/usr/share/games/fortunes")
DOC_ROOT = Path("/usr/share/doc")
OUT_PATH = Path(__file__).resolve().parent / "corpus.parquet"

FORTUNE_STRIDE = 6  # keep quotations 0, 6, 12, ... of every fortune file
MAX_COPYRIGHT_BYTES = 64 * 1024  # a handful of huge files (boost, chromium, ...) are skipped
CHANGELOG_BUDGET = 4096  # characters; at least one whole entry is always kept
MAX_CHANGELOG_CHARS = 4 * CHANGELOG_BUDGET  # changelogs whose first entry is longer: skipped
MIN_SECTION_BODY = 80  # python-docs sections with less body text are merged into the next

PYDOC_LICENCE = "PSF-2.0"
FORTUNE_LICENCE = "BSD-3-Clause"

COLUMNS = ["id", "text", "source", "kind", "title", "licence"]

# reST section adornment: one repeated punctuation character.
_ADORN_RE = re.compile(r"([!-/:-@\[-`{-~])\1*")
# Debian changelog entry header: "package (version) distribution(s); urgency=..."
_CHANGELOG_HEADER_RE = re.compile(r"^[a-z0-9][a-z0-9+.\-]*[ \t]+\([^()\s]+\)", re.MULTILINE)
_FORTUNE_SEP_RE = re.compile(r"^%\n", re.MULTILINE)


def _is_adornment(line: str) -> bool:
    s = line.rstrip("\r\n")
    return bool(s) and _ADORN_RE.fullmatch(s) is not None


# --------------------------------------------------------------------------- python docs


def _rst_headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """Return ``(start_line, body_line, title)`` for each reST section title.

    A title is a non-indented, non-blank line followed by an adornment line at least as
    long as the title, preceded by a blank line / start of file, or by an overline.
    """
    out = []
    n = len(lines)
    i = 0
    while i < n - 1:
        title = lines[i].rstrip("\r\n")
        under = lines[i + 1].rstrip("\r\n")
        if (
            title.strip()
            and not title[0].isspace()
            and not _is_adornment(title)
            and _is_adornment(under)
            and len(under) >= len(title.rstrip())
        ):
            prev = lines[i - 1].rstrip("\r\n") if i > 0 else ""
            if prev == under and (i < 2 or not lines[i - 2].strip()):
                out.append((i - 1, i + 2, title.strip()))  # over- and underlined
                i += 2
                continue
            if not prev.strip():
                out.append((i, i + 2, title.strip()))
                i += 2
                continue
        i += 1
    return out


def split_rst(text: str) -> list[tuple[str, str]]:
    """Split one reST file into ``(title, section_text)`` pieces, concatenating to ``text``.

    Text before the first heading (labels, module directives) belongs to the first section;
    a section whose body has fewer than ``MIN_SECTION_BODY`` non-space characters (e.g. a
    chapter title directly followed by a sub-heading) is merged into the following one.
    """
    lines = text.splitlines(keepends=True)
    heads = _rst_headings(lines)
    if not heads:
        return [("", text)] if text.strip() else []
    # candidate boundaries: start line of every heading except the first (preamble joins it)
    starts = [0] + [h[0] for h in heads[1:]]
    titles = [h[2] for h in heads]
    bodies = [h[1] for h in heads]
    ends = starts[1:] + [len(lines)]
    pieces: list[tuple[str, str]] = []
    pending_title = None
    pending_start = None
    for k, (st, body, en) in enumerate(zip(starts, bodies, ends, strict=True)):
        if pending_start is None:
            pending_start, pending_title = st, titles[k]
        body_text = "".join(lines[body:en])
        if len("".join(body_text.split())) < MIN_SECTION_BODY and k < len(starts) - 1:
            continue  # too little of its own: merge with the following section
        pieces.append((pending_title, "".join(lines[pending_start:en])))
        pending_start = pending_title = None
    assert "".join(p[1] for p in pieces) == text
    return pieces


def python_docs() -> list[dict]:
    rows = []
    for path in sorted(PYDOC_ROOT.rglob("*.rst.txt")):
        rel = path.relative_to(PYDOC_ROOT).as_posix()
        kind = rel.split("/")[0] if "/" in rel else "misc"
        text = path.read_text(encoding="utf-8")
        for k, (title, piece) in enumerate(split_rst(text)):
            if not piece.strip():
                continue
            rows.append(
                dict(
                    id=f"pydoc:{rel}#{k}",
                    text=piece,
                    source="python-docs",
                    kind=kind,
                    title=title or rel,
                    licence=PYDOC_LICENCE,
                )
            )
    return rows


# ------------------------------------------------------------------------------ fortunes


def fortunes() -> list[dict]:
    rows = []
    files = sorted(
        p
        for p in FORTUNE_ROOT.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
    )
    for path in files:
        text = path.read_text(encoding="utf-8")
        for k, piece in enumerate(_FORTUNE_SEP_RE.split(text)):
            if k % FORTUNE_STRIDE or not piece.strip():
                continue
            rows.append(
                dict(
                    id=f"fortune:{path.name}#{k}",
                    text=piece,
                    source="fortunes",
                    kind=path.name,
                    title=path.name,
                    licence=FORTUNE_LICENCE,
                )
            )
    return rows


# ------------------------------------------------------------------ copyright / changelog


def dep5_licence(text: str) -> str | None:
    """Short licence name of the ``Files: *`` paragraph of a machine-readable copyright
    file (https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/), else None."""
    if not re.match(r"Format:\s*\S*copyright-format", text):
        return None
    for para in re.split(r"\n[ \t]*\n", text):
        files = re.search(r"^Files:[ \t]*(.*(?:\n[ \t]+.*)*)", para, re.MULTILINE)
        lic = re.search(r"^License:[ \t]*(.*)$", para, re.MULTILINE)
        if files and lic and "*" in files.group(1).split() and lic.group(1).strip():
            return lic.group(1).strip()
    return None


def package_dirs() -> list[Path]:
    """Real (non-symlinked) package documentation directories, sorted by name."""
    return sorted(p for p in DOC_ROOT.iterdir() if p.is_dir() and not p.is_symlink())


def dpkg_sources() -> dict[str, tuple[str, str]]:
    """binary package -> (source package, version), from dpkg-query (empty if unavailable)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}\t${source:Package}\t${Version}\n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    res = {}
    for line in out.splitlines():
        pkg, src, ver = line.split("\t")
        res[pkg] = (src or pkg, ver)
    return res


def truncate_changelog(text: str, budget: int = CHANGELOG_BUDGET) -> str:
    """Longest prefix made of whole entries with at most ``budget`` characters (at least
    the first entry)."""
    starts = [m.start() for m in _CHANGELOG_HEADER_RE.finditer(text)]
    if not starts:
        return text[:budget] if len(text) > budget else text
    bounds = starts[1:] + [len(text)]
    cut = bounds[0]
    for b in bounds[1:]:
        if b > budget:
            break
        cut = b
    return text[:cut]


def copyright_and_changelogs(
    sources: dict[str, tuple[str, str]],
) -> tuple[list[dict], list[dict], list[str]]:
    copy_rows, log_rows, skipped = [], [], []
    for d in package_dirs():
        pkg = d.name
        kind = sources.get(pkg, (pkg, ""))[0]
        cpath = d / "copyright"
        licence = None
        if cpath.is_file() and not cpath.is_symlink():
            raw = cpath.read_bytes()
            text = raw.decode("utf-8")
            licence = dep5_licence(text)
            if len(raw) > MAX_COPYRIGHT_BYTES:
                skipped.append(f"copyright:{pkg} ({len(raw)} bytes)")
            elif text.strip():
                copy_rows.append(
                    dict(
                        id=f"copyright:{pkg}",
                        text=text,
                        source="copyright",
                        kind=kind,
                        title=pkg,
                        licence=licence or "see text",
                    )
                )
        lpath = d / "changelog.Debian.gz"
        if lpath.is_file() and not lpath.is_symlink():
            text = truncate_changelog(gzip.decompress(lpath.read_bytes()).decode("utf-8"))
            if len(text) > MAX_CHANGELOG_CHARS:
                skipped.append(f"changelog:{pkg} ({len(text)} chars in first entry)")
            elif text.strip():
                log_rows.append(
                    dict(
                        id=f"changelog:{pkg}",
                        text=text,
                        source="changelog",
                        kind=kind,
                        title=pkg,
                        licence=licence or "see package copyright",
                    )
                )
    return copy_rows, log_rows, skipped


# ---------------------------------------------------------------------------------- main


def main() -> int:
    sources = dpkg_sources()
    rows = python_docs() + fortunes()
    copy_rows, log_rows, skipped = copyright_and_changelogs(sources)
    rows += copy_rows + log_rows

    ids = [r["id"] for r in rows]
    dup = [i for i, c in Counter(ids).items() if c > 1]
    if dup:
        raise SystemExit(f"duplicate ids: {dup[:10]}")

    build_info = {
        "packages": {
            p: sources.get(p, ("", "not installed"))[1]
            for p in ("python3.11-doc", "fortunes", "fortunes-min")
        },
        "doc_dirs_read": len(package_dirs()),
        "max_copyright_bytes": MAX_COPYRIGHT_BYTES,
        "max_changelog_chars": MAX_CHANGELOG_CHARS,
        "skipped": skipped,
        "fortune_stride": FORTUNE_STRIDE,
        "changelog_budget_chars": CHANGELOG_BUDGET,
    }
    table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in COLUMNS})
    table = table.replace_schema_metadata({"infoprune.build": json.dumps(build_info)})
    pq.write_table(table, OUT_PATH, compression="zstd", compression_level=19)

    print(f"wrote {OUT_PATH} ({OUT_PATH.stat().st_size / 1e6:.2f} MB)")
    print(f"{'source':<12} {'docs':>6} {'chars':>11} {'utf8 bytes':>11}")
    for src in ("python-docs", "fortunes", "copyright", "changelog"):
        sel = [r["text"] for r in rows if r["source"] == src]
        nbytes = sum(len(t.encode("utf-8")) for t in sel)
        print(f"{src:<12} {len(sel):>6} {sum(map(len, sel)):>11} {nbytes:>11}")
    total_bytes = sum(len(r["text"].encode("utf-8")) for r in rows)
    print(f"{'total':<12} {len(rows):>6} {'':>11} {total_bytes:>11}")
    print("packages:", ", ".join(f"{k} {v}" for k, v in build_info["packages"].items()))
    print(f"skipped {len(skipped)} oversized files:", ", ".join(skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
