"""Temporary files that a killed process cannot leave behind for good.

Every temporary name carries its owner's pid and start time: `.infoprune-tmp-PID-START-RAND-WHAT`.
A process that is killed (even `kill -9`) cannot clean up, so the next command on the same store
(and the app at start) sweeps the store's scratch folder, and an export sweeps its output folder,
removing the temporaries whose owner is gone. Names of live processes are never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from core import processes

PREFIX = ".infoprune-tmp-"
_NAME = re.compile(r"^\.infoprune-tmp-(\d+)-(\d+)-[0-9a-f]{8}-")


def temp_name(what: str) -> str:
    """A fresh temporary name owned by this process; WHAT says what it is for (kept readable)."""
    me = processes.current()
    return f"{PREFIX}{me.pid}-{me.start or 0}-{uuid.uuid4().hex[:8]}-{what}"


def scratch_folder(db_path: Path) -> Path:
    """Where a store's commands keep their temporaries: `<store>.tmp/` beside the store."""
    return db_path.with_name(db_path.name + ".tmp")


@contextlib.contextmanager
def scratch_dir(db_path: Path, what: str) -> Iterator[Path]:
    """A private folder under the store's scratch folder, removed when the block ends."""
    folder = scratch_folder(db_path) / temp_name(what)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        remove(folder)


def sweep(folder: Path) -> list[Path]:
    """Remove the temporaries in FOLDER whose owning process has ended; return what went."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.match(entry.name)
        if match and not processes.is_alive(int(match[1]), int(match[2])):
            remove(entry)
            removed.append(entry)
    return removed


def sweep_store(db_path: Path) -> list[Path]:
    return sweep(scratch_folder(db_path))


def remove(path: Path) -> None:
    """Delete a temporary file or folder (a symlink itself, never what it points to)."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_text_atomically(path: Path, text: str) -> None:
    """TEXT to PATH whole or not at all: a temporary beside it, then a rename (a killed process
    leaves only the temporary, which its name lets a later sweep remove)."""
    tmp = path.with_name(temp_name(path.name))
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
