"""What a benchmark reads about a process from /proc: CPU seconds, resident memory, threads.

Figures are for the process and every descendant, so a server that forks helpers is
counted whole. CPU is user + system time, the number ``top`` turns into a percentage.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, found through /proc/<pid>/task/*/children."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    queue += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants so far (0 for a process gone)."""
    total = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # Fields after the command name, which may contain spaces and parentheses.
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICKS


def status_field(pid: int, name: str) -> int:
    """An integer field of /proc/<pid>/status (VmRSS and VmHWM in KiB, Threads), 0 if absent."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Snapshot:
    """One process's resource use at one moment."""

    cpu_s: float
    rss_mib: float
    threads: int

    @classmethod
    def of(cls, pid: int) -> Snapshot:
        """Read it now (memory and threads of ``pid`` itself, CPU including descendants)."""
        return cls(cpu_seconds(pid), status_field(pid, "VmRSS") / 1024, status_field(pid, "Threads"))
