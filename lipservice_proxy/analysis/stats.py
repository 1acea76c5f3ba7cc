"""Rolling per-(service, pattern) statistics: the pipeline feeds them, the analysis loop reads them.

`PatternStats.observe` runs on the hot path once per request and costs O(patterns in the batch):
it only adds the batch's tallies into the current interval. `roll(now)` closes the interval (once
per analysis pass, off the hot path): it returns an `IntervalSnapshot` holding the interval's
counts next to each baseline as it was *before* the interval (so anomaly detection compares the
interval with the past, not with itself), then folds the interval into the baselines.

Baselines are exponentially weighted mean and variance of the rate (records per second), per
pattern and per service for ERROR+ records, so a spike is judged against recent history with
bounded memory and no stored time series. Memory is bounded by `max_patterns`: past it, the least
recently seen entries are forgotten (a forgotten pattern that returns counts as new again).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..sampling.decision import BatchOutcome
from ..sampling.severity import ERROR, LEVEL_OF_NAME, SEVERITY_NAMES

N_LEVELS = len(SEVERITY_NAMES)
EMA_ALPHA = 0.3  # weight of the newest interval: a baseline forgets a burst within a few intervals


@dataclass(slots=True)
class Ema:
    """Exponentially weighted mean and variance of one rate."""

    mean: float = 0.0
    variance: float = 0.0
    samples: int = 0

    def update(self, value: float, alpha: float = EMA_ALPHA) -> None:
        if self.samples == 0:
            self.mean = value
        else:
            diff = value - self.mean
            increment = alpha * diff
            self.mean += increment
            self.variance = (1 - alpha) * (self.variance + diff * increment)
        self.samples += 1

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)


@dataclass(slots=True)
class PatternEntry:
    service: str
    pattern_id: str
    template: str
    first_seen: float
    last_seen: float
    counts: list[int] = field(default_factory=lambda: [0] * N_LEVELS)  # per level, since first seen
    kept: int = 0
    bytes: int = 0
    bytes_kept: int = 0
    interval_counts: list[int] = field(default_factory=lambda: [0] * N_LEVELS)
    interval_kept: int = 0
    interval_bytes: int = 0
    last_interval: int = 0  # records in the last closed interval, for ranking
    rate: Ema = field(default_factory=Ema)
    new: bool = False  # first seen after the first interval closed, and no interval closed since

    @property
    def received(self) -> int:
        return sum(self.counts)


class LevelCounts:
    """Totals over `counts` (records per severity level), for the classes below that carry one."""

    __slots__ = ()
    counts: tuple[int, ...]

    @property
    def received(self) -> int:
        return sum(self.counts)

    @property
    def protected(self) -> int:
        """ERROR and FATAL records: always kept, so not the policy's to sample."""
        return sum(self.counts[ERROR:])

    @property
    def sampleable(self) -> int:
        return sum(self.counts[:ERROR])


@dataclass(frozen=True, slots=True)
class PatternWindow(LevelCounts):
    """One pattern's share of a closed interval, with its baseline from before the interval."""

    service: str
    pattern_id: str
    template: str
    counts: tuple[int, ...]  # per level
    kept: int
    bytes: int
    baseline: float  # records per second
    baseline_std: float
    baseline_intervals: int
    new: bool


@dataclass(frozen=True, slots=True)
class ServiceWindow:
    service: str
    received: int
    errors: int  # ERROR and FATAL records
    baseline: float  # ERROR+ records per second
    baseline_std: float
    baseline_intervals: int


@dataclass(frozen=True, slots=True)
class IntervalSnapshot:
    start: float
    end: float
    patterns: tuple[PatternWindow, ...]  # only patterns seen in the interval
    services: tuple[ServiceWindow, ...]

    @property
    def duration(self) -> float:
        return max(self.end - self.start, 1e-3)

    @property
    def received(self) -> int:
        return sum(p.received for p in self.patterns)


@dataclass(frozen=True, slots=True)
class PatternVolume(LevelCounts):
    """One pattern's interval summed over services (policy rules apply to a pattern everywhere)."""

    pattern_id: str
    template: str
    counts: tuple[int, ...]  # per level
    baseline: float  # records per second, summed over services
    services: tuple[str, ...]


def pattern_volumes(snapshot: IntervalSnapshot) -> list[PatternVolume]:
    """The interval's patterns, busiest first (ties by id, so the order is deterministic)."""
    merged: dict[str, list[PatternWindow]] = {}
    for window in snapshot.patterns:
        merged.setdefault(window.pattern_id, []).append(window)
    volumes = [
        PatternVolume(
            pattern_id,
            windows[0].template,
            tuple(sum(level) for level in zip(*(w.counts for w in windows), strict=True)),
            sum(w.baseline for w in windows),
            tuple(sorted(w.service for w in windows)),
        )
        for pattern_id, windows in merged.items()
    ]
    volumes.sort(key=lambda v: (-v.received, v.pattern_id))
    return volumes


_TakenCounts = tuple[PatternEntry, list[int], int, int, bool]  # entry, counts, kept, bytes, new


class ClosedInterval:
    """An interval's counts taken out of the live stats by `PatternStats.close_interval`.

    `snapshot` (once) builds the interval's windows and updates the baselines it is compared with:
    each entry's rate and each service's error rate, which nothing but this touches.
    """

    def __init__(
        self, start: float, end: float, taken: list[_TakenCounts], service_errors: dict[str, Ema]
    ) -> None:
        self._start, self._end = start, end
        self._taken = taken
        self._service_errors = service_errors

    def snapshot(self) -> IntervalSnapshot:
        duration = max(self._end - self._start, 1e-3)
        windows: list[PatternWindow] = []
        errors_by_service: dict[str, list[int]] = {}
        live_services: set[str] = set()
        for entry, counts, kept, nbytes, new in self._taken:
            live_services.add(entry.service)
            received = sum(counts)
            if received:
                windows.append(
                    PatternWindow(
                        entry.service,
                        entry.pattern_id,
                        entry.template,
                        tuple(counts),
                        kept,
                        nbytes,
                        entry.rate.mean,
                        entry.rate.std,
                        entry.rate.samples,
                        new,
                    )
                )
                totals = errors_by_service.setdefault(entry.service, [0, 0])
                totals[0] += received
                totals[1] += sum(counts[ERROR:])
            entry.rate.update(received / duration)
            entry.last_interval = received
        for service in set(self._service_errors) - live_services:
            del self._service_errors[service]  # its patterns were all evicted: bounded like them
        services = []
        for service in sorted(live_services):
            received, errors = errors_by_service.get(service, (0, 0))
            baseline = self._service_errors.setdefault(service, Ema())
            services.append(
                ServiceWindow(service, received, errors, baseline.mean, baseline.std, baseline.samples)
            )
            baseline.update(errors / duration)
        return IntervalSnapshot(self._start, self._end, tuple(windows), tuple(services))


class PatternStats:
    """The pipeline's `BatchObserver` for the analysis loop."""

    def __init__(self, max_patterns: int = 20_000) -> None:
        self._max_patterns = max_patterns
        self._entries: dict[tuple[str, str], PatternEntry] = {}
        self._service_errors: dict[str, Ema] = {}
        self._interval_start: float | None = None
        self._closed = 0
        self.evicted = 0
        self.last_observed: float | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def observe(self, outcome: BatchOutcome, now: float) -> None:
        if self._interval_start is None:
            self._interval_start = now
        self.last_observed = now
        entries = self._entries
        for (service, pattern_id, severity), tally in outcome.patterns.items():
            entry = entries.get((service, pattern_id))
            if entry is None:
                entry = entries[(service, pattern_id)] = PatternEntry(
                    service, pattern_id, tally.template, now, now, new=self._closed > 0
                )
                if len(entries) > self._max_patterns:
                    self._evict()
            else:
                entry.template = tally.template  # a pattern keeps its id as its template generalises
            level = LEVEL_OF_NAME[severity]
            entry.last_seen = now
            entry.counts[level] += tally.received
            entry.interval_counts[level] += tally.received
            entry.kept += tally.kept
            entry.interval_kept += tally.kept
            entry.bytes += tally.bytes
            entry.interval_bytes += tally.bytes
            entry.bytes_kept += tally.bytes_kept

    def _evict(self) -> None:
        """Forget the least recently seen quarter, so eviction runs rarely (amortised O(1) per insert)."""
        ranked = sorted(self._entries.items(), key=lambda item: item[1].last_seen)
        for key, _ in ranked[: max(1, len(ranked) // 4)]:
            del self._entries[key]
            self.evicted += 1

    def roll(self, now: float) -> IntervalSnapshot:
        """Close the current interval at `now` and fold it into the baselines."""
        return self.close_interval(now).snapshot()

    def close_interval(self, now: float) -> ClosedInterval:
        """Take every entry's interval counts and start the next interval at `now`.

        Only this must not interleave with `observe`, and it is a swap per entry; the snapshot and
        the baselines (`ClosedInterval.snapshot`) can be computed afterwards, e.g. in a thread.
        """
        start = self._interval_start if self._interval_start is not None else now
        taken: list[_TakenCounts] = []
        for entry in self._entries.values():
            taken.append((entry, entry.interval_counts, entry.interval_kept, entry.interval_bytes, entry.new))
            entry.interval_counts = [0] * N_LEVELS
            entry.interval_kept = entry.interval_bytes = 0
            entry.new = False
        self._closed += 1
        self._interval_start = now
        return ClosedInterval(start, now, taken, self._service_errors)

    def entries(self) -> Iterator[PatternEntry]:
        return iter(self._entries.values())

    # ---- state across restarts (analysis/state.py writes and reads the file) ----

    def state(self) -> tuple[list[PatternEntry], dict[str, Ema], int]:
        """What `state_document` needs, taken on the event loop (a copy of the containers only)."""
        return list(self._entries.values()), dict(self._service_errors), self._closed

    def restore(self, document: dict[str, Any]) -> int:
        """Take up a `state_document`: the entries (most recently seen first, up to max_patterns)
        and baselines a previous process had. Restored patterns are known, not new. Returns the count."""
        rows = sorted(document["patterns"], key=lambda row: -row[4])[: self._max_patterns]
        entries = []
        for service, pattern_id, template, first_seen, last_seen, counts, kept, rate in rows:
            if len(counts) != N_LEVELS:
                raise ValueError(f"pattern {pattern_id}: {len(counts)} severity counts, not {N_LEVELS}")
            entry = PatternEntry(
                str(service), str(pattern_id), str(template), float(first_seen), float(last_seen)
            )
            entry.counts = [int(n) for n in counts]
            entry.kept = int(kept)
            entry.rate = Ema(float(rate[0]), float(rate[1]), int(rate[2]))
            entries.append(entry)
        services = {
            str(name): Ema(float(m), float(v), int(n)) for name, (m, v, n) in document["services"].items()
        }
        closed = int(document["closed"])
        # all read and checked: only now does anything change
        for entry in entries:
            self._entries[(entry.service, entry.pattern_id)] = entry
        self._service_errors.update(services)
        self._closed = max(self._closed, 1, closed)  # what appears from now on is news
        return len(rows)


def state_document(entries: list[PatternEntry], services: dict[str, Ema], closed: int) -> dict[str, Any]:
    """The stats as JSON-ready data: per pattern its totals and rate baseline, per service its error
    baseline. Interval counts are left out: the interval in progress is not carried over."""
    return {
        "patterns": [
            [
                e.service,
                e.pattern_id,
                e.template,
                e.first_seen,
                e.last_seen,
                list(e.counts),
                e.kept,
                [e.rate.mean, e.rate.variance, e.rate.samples],
            ]
            for e in entries
        ],
        "services": {name: [ema.mean, ema.variance, ema.samples] for name, ema in services.items()},
        "closed": closed,
    }
