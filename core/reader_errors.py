"""What a reader's error means for the user: DuckDB's messages turned into one line that names the
user's file (and line, where it can be found) and says what to do."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import duckdb
import pyarrow as pa

from core.compression import open_raw, strip_compression
from core.errors import InputError


class ReaderLimitError(InputError):
    """A record is larger than one of DuckDB's reader limits.

    Carries which limit (`setting` is the `ingest_dataset` keyword: max_line_size or
    max_object_size) and the size to raise it to, so the app can name its own field where the
    command line names an option.
    """

    OPTIONS = {"max_line_size": "--max-line-size", "max_object_size": "--max-object-size"}

    def __init__(
        self, location: str, record: str, limit_name: str, setting: str, current: int, needed: int
    ) -> None:
        self.location, self.record, self.limit_name = location, record, limit_name
        self.setting, self.current, self.needed = setting, current, needed
        super().__init__(self.message(f"pass {self.OPTIONS[setting]} {needed} (or larger)"))

    def message(self, remedy: str) -> str:
        """The one-line message with REMEDY (how to raise the limit) at its end."""
        return (
            f"{self.location}: {self.record} is larger than DuckDB's {self.limit_name} "
            f"({self.current:,} bytes) — {remedy}"
        )


class InvalidUtf8(Exception):
    pass


def readable_error(exc: Exception, kind: str, location: str, shown: dict[str, str]) -> Exception:
    """DuckDB's error as one line that names the user's file and what to do.

    SHOWN maps each path DuckDB was given to the one to name (a repaired copy to its original).
    Phrases are matched with the paths taken out, so a file called `gzip.csv` is no hint.
    """
    text = str(exc)
    paths = sorted(shown, key=len, reverse=True)
    named = next((p for p in paths if p in text), None)
    where = shown[named] if named else location
    scrubbed = text
    for p in paths:
        scrubbed = scrubbed.replace(p, "<file>")
    low = scrubbed.lower()
    first = (low.splitlines() or [""])[0]
    detail = re.sub(r"^[\w ]*error: ", "", (scrubbed.splitlines() or [""])[0], flags=re.I)
    detail = detail.strip().replace("<file>", where)

    if "invalid utf-8" in low or "invalid unicode" in low:
        return InvalidUtf8()
    if "invalid string encoding" in low:
        return InputError(
            f"{where}: a string column holds invalid UTF-8, which cannot be repaired in Parquet "
            "— rewrite the file with valid UTF-8 text"
        )
    if m := re.search(r"maximum_object_size\"? of (\d+) bytes exceeded.*?\(>\s*(\d+) bytes", text):
        current, seen = int(m[1]), int(m[2])
        # DuckDB's buffer holds twice the setting; it read SEEN bytes without finding the end.
        return ReaderLimitError(
            where,
            "a JSON record",
            "maximum_object_size",
            "max_object_size",
            current,
            _power_of_two_above(max(2 * seen, 2 * current)),
        )
    if m := re.search(r"maximum line size of (\d+) bytes exceeded\. actual size:\s*(\d+)", low):
        return ReaderLimitError(
            where,
            "a CSV row",
            "max_line_size",
            "max_line_size",
            int(m[1]),
            _power_of_two_above(int(m[2])),
        )
    if re.search(r"gzip|zstd|decompress", first):
        return InputError(
            f"{where}: truncated or corrupt compressed file ({detail}) — re-create it"
        )
    if m := re.search(
        r"malformed json in file \"<file>\", at byte \d+ in (line|record/value) (\d+): ([^\n]*)",
        low,
    ):
        why = m[3].strip().rstrip(".").strip()
        nd = m[1] == "line" or strip_compression(where)[0].endswith((".jsonl", ".ndjson"))
        line = _bad_json_line(named, int(m[2]), nd) if named else None
        if line is None:
            return InputError(f"broken JSON in {where} ({why}) — fix the file")
        return InputError(f"broken JSON at {where} line {line} ({why}) — fix or remove that line")
    if kind == "parquet":
        if "schema mismatch" in low:
            return InputError(
                f"the Parquet files have different columns ({detail}) — ingest them separately "
                "or make the columns match"
            )
        if m := re.search(
            r'the column "([^"]+)" has type (\S+), but we are trying to read it as type ([^\s.]+)',
            scrubbed,
        ):
            return InputError(
                f"the Parquet files have different column types: '{m[1]}' is {m[2]} in {where} "
                f"but {m[3]} in the first file — ingest them separately or make the types match"
            )
        return InputError(
            f"{where}: not a readable Parquet file ({detail}) — it is corrupt or truncated"
        )
    if kind in ("csv", "tsv"):
        return _csv_error(scrubbed, kind, where, named, detail)
    if "json" in low:
        return InputError(f"{where}: not valid JSON ({detail}) — fix the file")
    return InputError(f"cannot read {where}: {detail}")


def not_an_object_error(exc: Exception, location: str, shown: dict[str, str]) -> InputError | None:
    """DuckDB's error for a record that is not a JSON object, read as records, as one line that
    names the file and line; None for any other error. SHOWN is as for `readable_error`."""
    text = str(exc)
    named = next((p for p in sorted(shown, key=len, reverse=True) if f'"{p}"' in text), None)
    m = re.search(r"in (line|record/value) (\d+): Expected OBJECT, but got", text)
    if m is None:
        return None
    where = shown[named] if named else location
    line = _nth_record_line(named, int(m[2])) if named and m[1] == "line" else None
    if line is None:
        return InputError(
            f"{where}: record {m[2]} is not a JSON object (each record must be one) — fix or "
            "remove it"
        )
    return InputError(
        f"{where} line {line} is not a JSON object (each JSONL line must be one) — fix or "
        "remove that line"
    )


def _nth_record_line(path: str, record: int) -> int | None:
    """The 1-based line of PATH's RECORD-th non-blank line (DuckDB counts records, not lines)."""
    n = 0
    try:
        with open_raw(Path(path)) as raw:
            for lineno, line in enumerate(raw, 1):
                if line.strip():
                    n += 1
                    if n == record:
                        return lineno
    except (OSError, EOFError):
        return None
    return None


def _csv_error(scrubbed: str, kind: str, where: str, named: str | None, detail: str) -> InputError:
    """A CSV/TSV error: the line and what is wrong with it, where DuckDB (or a scan) can tell."""
    line = re.search(r"CSV Error on Line: (\d+)", scrubbed)
    cols = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", scrubbed)
    if line and cols:
        return InputError(
            f"{where} line {line[1]} has {cols[2]} columns, the header has {cols[1]} — "
            "fix that line (a stray delimiter or an unclosed quote)"
        )
    if "error when sniffing file" in scrubbed.lower():
        ragged = _ragged_csv_row(named, "\t" if kind == "tsv" else ",") if named else None
        if ragged:
            return InputError(
                f"{where} line {ragged[0]} has {ragged[2]} columns, the header has {ragged[1]} "
                "— fix that line (a stray delimiter or an unclosed quote)"
            )
        return InputError(
            f"{where}: DuckDB cannot work out the {kind.upper()}'s layout (quoting, or rows "
            "with different numbers of columns) — check it has a header row and one row per line"
        )
    if line:
        lines = scrubbed.splitlines()
        problem = next(
            (s.strip() for s in lines[1:] if s.strip() and not s.startswith("Original Line:")), ""
        )
        return InputError(
            f"cannot parse {kind.upper()} {where} line {line[1]}: {problem} — fix that line"
        )
    return InputError(f"cannot parse {kind.upper()} {where} ({detail})")


def _power_of_two_above(n: int) -> int:
    return 1 << max(int(n), 1).bit_length()


def _bad_json_line(path: str, record: int, newline_delimited: bool) -> int | None:
    """The 1-based line of the broken record DuckDB names, or None if the file is not one record
    per line. DuckDB counts non-blank lines and names the one after the broken one, so both are
    checked, with DuckDB's own parser (it allows NaN and trailing commas, Python's json does not).
    """
    candidates = {record - 1, record}
    found, n = None, 0
    con = duckdb.connect()
    try:
        with open_raw(Path(path)) as raw:
            for lineno, line in enumerate(raw, 1):
                if not line.strip():
                    continue
                n += 1
                # An array or pretty-printed file has no line that is JSON on its own.
                if n in candidates or (not newline_delimited and n <= 3):
                    text = line.decode("utf-8", errors="replace")
                    valid = con.execute("SELECT json_valid(?)", [text]).fetchall()[0][0]
                    newline_delimited = newline_delimited or bool(valid)
                    if not valid and found is None and n in candidates:
                        found = lineno
                if n >= max(record, 3):
                    break
    except (OSError, EOFError, duckdb.Error):
        return None
    finally:
        con.close()
    return found if newline_delimited else None


def _ragged_csv_row(path: str, delim: str) -> tuple[int, int, int] | None:
    """The first row whose number of fields differs from the header's: (line, header, found)."""
    try:
        with (
            open_raw(Path(path)) as raw,
            io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as text,
        ):
            reader = csv.reader(text, delimiter=delim)
            header = next(reader, None)
            for row in reader:
                if header is not None and row and len(row) != len(header):
                    return reader.line_num, len(header), len(row)
    except (OSError, EOFError, csv.Error):
        return None
    return None


def check_parquet_columns(files: list[str]) -> None:
    """DuckDB reads every file with the first one's columns: a file without one of them fails as
    if corrupt, and a file with more loses them silently. Compare the footers first."""
    import pyarrow.parquet as pq

    base = os.path.commonpath(files)
    first: tuple[str, list[str]] | None = None
    for f in files:
        try:
            names = pq.read_schema(f).names
        except (OSError, pa.ArrowException):
            return  # a damaged file: DuckDB's read says what is wrong with it
        if first is None:
            first = (f, names)
        elif set(names) != set(first[1]):
            a, b = (os.path.relpath(p, base) if p != base else p for p in (first[0], f))
            raise InputError(
                f"the Parquet files have different columns: {a} has ({', '.join(first[1])}), "
                f"{b} has ({', '.join(names)}) — ingest them separately or make the columns match"
            )
