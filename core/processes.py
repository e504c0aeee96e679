"""Which process is which: a pid together with its start time, because pids are reused.

A job records both when it claims work; "is that job still alive?" and "may I signal it?" then
match both, so a recycled pid (another program that happens to get the same number) is never taken
for the job, never blocks a resume and is never sent a signal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start: int | None  # start time in clock ticks since boot (Linux /proc/PID/stat, field 22)


def start_time(pid: int) -> int | None:
    """PID's start time, or None when there is no such process (or it is a zombie)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def current() -> ProcessIdentity:
    pid = os.getpid()
    return ProcessIdentity(pid, start_time(pid))


def is_alive(pid: int | None, start: int | None) -> bool:
    """True while the process PID that started at START still runs.

    Without a recorded start time nothing can prove the pid is still the same process, so the
    answer is False: a stale row is taken for stopped rather than an unrelated process for a job.
    """
    if not pid or start is None:
        return False
    try:
        return start_time(int(pid)) == int(start)
    except (TypeError, ValueError):
        return False


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and ')')."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None
