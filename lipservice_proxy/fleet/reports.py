"""A sampler's pattern counts since its last report: the pipeline feeds the window, the client drains it.

`observe` runs on the hot path once per request (it is the pipeline's `BatchObserver`) and costs
O(patterns in the batch). Memory is bounded by `max_keys` (service, pattern) entries: records of
patterns beyond them are summed into `other` instead, so a report's totals stay exact. `take`
closes the window: its busiest `max_patterns` entries go out by name, the rest are summed into
`other`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..config import SEVERITY_NAMES
from ..sampling.decision import BatchOutcome
from ..sampling.severity import LEVEL_OF_NAME

N_LEVELS = len(SEVERITY_NAMES)
Key = tuple[str, str]  # (service, pattern id)


def _zeros() -> list[int]:
    return [0] * N_LEVELS


@dataclass(slots=True)
class WindowEntry:
    template: str
    received: list[int] = field(default_factory=_zeros)  # per level
    kept: list[int] = field(default_factory=_zeros)
    bytes: int = 0  # body characters
    bytes_kept: int = 0

    @property
    def total(self) -> int:
        return sum(self.received)


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    start: float
    end: float
    patterns: list[tuple[Key, WindowEntry]]  # busiest first
    other_received: list[int]
    other_kept: list[int]

    @property
    def records(self) -> int:
        return sum(entry.total for _, entry in self.patterns) + sum(self.other_received)


class ReportWindow:
    def __init__(self, max_patterns: int, now: float, max_keys: int | None = None) -> None:
        self._max_patterns = max_patterns
        self._max_keys = max_keys if max_keys is not None else 4 * max_patterns
        self._start = now
        self._entries: dict[Key, WindowEntry] = {}
        self._other_received = _zeros()
        self._other_kept = _zeros()

    def __len__(self) -> int:
        return len(self._entries)

    def observe(self, outcome: BatchOutcome, now: float) -> None:
        entries = self._entries
        for (service, pattern_id, severity), tally in outcome.patterns.items():
            level = LEVEL_OF_NAME[severity]
            entry = entries.get((service, pattern_id))
            if entry is None:
                if len(entries) >= self._max_keys:
                    self._other_received[level] += tally.received
                    self._other_kept[level] += tally.kept
                    continue
                entry = entries[(service, pattern_id)] = WindowEntry(tally.template)
            entry.received[level] += tally.received
            entry.kept[level] += tally.kept
            entry.bytes += tally.bytes
            entry.bytes_kept += tally.bytes_kept

    def take(self, now: float) -> ClosedWindow:
        """Close the window at `now` and start the next one."""
        items = self._entries.items()
        if len(items) > self._max_patterns:
            named = heapq.nlargest(self._max_patterns, items, key=lambda item: (item[1].total, item[0]))
        else:
            named = sorted(items, key=lambda item: (item[1].total, item[0]), reverse=True)
        other_received, other_kept = self._other_received, self._other_kept
        if len(named) < len(items):
            kept_keys = {key for key, _ in named}
            for key, entry in items:
                if key not in kept_keys:
                    for level in range(N_LEVELS):
                        other_received[level] += entry.received[level]
                        other_kept[level] += entry.kept[level]
        closed = ClosedWindow(self._start, now, named, other_received, other_kept)
        self._start = now
        self._entries = {}
        self._other_received = _zeros()
        self._other_kept = _zeros()
        return closed

    def busiest(self, limit: int) -> list[tuple[Key, WindowEntry]]:
        """The open window's busiest entries (for the sampler's admin view)."""
        return heapq.nlargest(limit, self._entries.items(), key=lambda item: (item[1].total, item[0]))

    @property
    def start(self) -> float:
        return self._start
