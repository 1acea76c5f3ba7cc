"""First occurrences: every pattern keeps its first N records in each window, so none vanishes.

Windows are aligned to multiples of the window length (wall or log time), so "at least one record
per pattern per window" can be checked from the outside with the same arithmetic. The per-record
check (count within the current window) is inlined in the sampler's loop, on the pattern state.
"""

from __future__ import annotations

import math


def window_start(now: float, window: float) -> float:
    return now - (now % window)


def first_keeps(sampleable: int, count: int, window: float, duration: float) -> int:
    """How many of a pattern's `sampleable` records over `duration` seconds its first-per-window
    rule keeps whatever its rate: `count` in each window the span touches (the planning figure the
    heuristic budgets with and proposals project with)."""
    return min(sampleable, count * max(1, math.ceil(duration / window)))
