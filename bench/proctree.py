"""CPU time and memory of a process and all its descendants, from /proc (Linux).

CPU is utime + stime of every live process in the tree plus cutime + cstime (children that already
exited and were reaped are charged to their parent there, so a worker that dies mid-run still counts).
Memory sums VmRSS (now) and VmHWM (each process's own peak) over the tree; the sum of peaks can
exceed the tree's simultaneous peak, so it errs on the side of reporting too much. The root's own
VmHWM is kept apart: with a short-lived child (the proxy's clustering process) alive or not at the
moment of sampling, the sums move by the child's size.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KIB = 1024


@dataclass(frozen=True)
class TreeSample:
    pids: tuple[int, ...]
    cpu_seconds: float
    rss_bytes: int
    peak_rss_bytes: int
    root_peak_rss_bytes: int  # VmHWM of `root` alone


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])  # field 4 of stat: ppid
    return parents


def tree_pids(root: int) -> tuple[int, ...]:
    """`root` and every live descendant, root first."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found = [root]
    for pid in found:  # grows while iterating: a breadth-first walk
        found.extend(children.get(pid, ()))
    return tuple(found)


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields 14-17 of stat: utime, stime, cutime, cstime (index 11-14 after the command name)
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def _memory_bytes(pid: int) -> tuple[int, int]:
    rss = peak = 0
    try:
        with (PROC / str(pid) / "status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * KIB
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * KIB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return rss, peak


def sample_tree(root: int) -> TreeSample:
    pids = tree_pids(root)
    memory = [_memory_bytes(pid) for pid in pids]
    return TreeSample(
        pids=pids,
        cpu_seconds=sum(_cpu_seconds(pid) for pid in pids),
        rss_bytes=sum(rss for rss, _ in memory),
        peak_rss_bytes=sum(peak for _, peak in memory),
        root_peak_rss_bytes=memory[0][1],
    )


def load_average() -> list[float]:
    return [float(value) for value in (PROC / "loadavg").read_text().split()[:3]]


def host_speed(repeats: int = 3) -> float:
    """CPU seconds a fixed pure-Python loop takes here, best of `repeats` (~0.11 s on this project's
    machine when its host is quiet, ~0.18 s when it is not). It moves with the neighbours' load:
    read every other figure of a run next to it."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        total = 0
        for number in range(3_000_000):
            total += number * number
        best = min(best, time.process_time() - started)
    return round(best, 3)
