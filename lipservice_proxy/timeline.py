"""Kept versus dropped over time, for the status page: bounded rings of fixed-width buckets.

The pipeline hands every batch's outcome to `observe` (it is a `BatchObserver`), which adds the
batch's counts to the buckets of `now`, at O(patterns and services in the batch). Two rings share
one `BucketRing`: totals per 5 s step (720 of them: the last hour) for the chart and the tiles, and
per minute (60 of them) the counts per (service, pattern) and per service, for the per-pattern
volume and the per-service breakdown. A minute tracks at most `max_patterns` patterns and
`max_services` services; records past those bounds are still counted (in `untracked` and under
`OTHER_SERVICES`), so memory is fixed whatever the traffic and no record goes uncounted. An idle
stretch costs nothing: `points` fills it with empty buckets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from .sampling.decision import BatchOutcome

OTHER_SERVICES = "(other services)"  # where a minute counts the services past its bound


@dataclass(slots=True)
class Bucket:
    start: float  # seconds since the epoch, a multiple of the step
    kept: int = 0
    dropped: int = 0
    rejected: int = 0
    bytes_received: int = 0
    bytes_kept: int = 0

    @property
    def received(self) -> int:
        return self.kept + self.dropped + self.rejected

    def add(self, other: Bucket) -> None:
        self.kept += other.kept
        self.dropped += other.dropped
        self.rejected += other.rejected
        self.bytes_received += other.bytes_received
        self.bytes_kept += other.bytes_kept


@dataclass(slots=True)
class VolumeBucket:
    """One minute's counts per pattern and per service."""

    start: float
    patterns: dict[tuple[str, str], list[int]] = field(
        default_factory=dict
    )  # (service, id) -> [kept, dropped]
    untracked: list[int] = field(default_factory=lambda: [0, 0])  # [kept, dropped] past max_patterns
    # service -> [received, kept, bytes received, bytes kept]: records as BatchOutcome.records counts
    # them (the valid ones), bytes as the tiles count them (serialized sizes)
    services: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PatternSeries:
    kept: list[int]  # per minute, oldest first
    dropped: list[int]


class _Timed(Protocol):
    start: float


B = TypeVar("B", bound=_Timed)


class BucketRing(Generic[B]):
    """At most `capacity` buckets of `step` seconds, oldest first; a bucket is made on first use."""

    def __init__(self, step: float, capacity: int, make: Callable[[float], B]) -> None:
        if step <= 0 or capacity < 1:
            raise ValueError("step must be positive and capacity at least 1")
        self.step = step
        self.capacity = capacity
        self._make = make
        self._buckets: deque[B] = deque(maxlen=capacity)

    def __iter__(self) -> Iterator[B]:
        return iter(self._buckets)

    def __len__(self) -> int:
        return len(self._buckets)

    def at(self, now: float) -> B:
        """The bucket of `now`; a clock that stepped back gets the newest, never rewrites history."""
        start = now - now % self.step
        buckets = self._buckets
        if not buckets or buckets[-1].start < start:
            buckets.append(self._make(start))
        return buckets[-1]

    def recent(self, now: float) -> list[B]:
        """The held buckets of the last `capacity` steps up to `now` (an idle ring holds older ones)."""
        first = now - now % self.step - (self.capacity - 1) * self.step
        return [bucket for bucket in self._buckets if bucket.start >= first]

    def points(self, now: float, min_buckets: int) -> list[B]:
        """One bucket per step from the oldest held (at least `min_buckets` back, at most `capacity`)
        up to the bucket of `now`, idle steps as empty buckets."""
        last = now - now % self.step
        count = min_buckets
        if self._buckets:
            count = max(count, round((last - self._buckets[0].start) / self.step) + 1)
        count = min(count, self.capacity)
        first = last - (count - 1) * self.step
        held = {round(b.start / self.step): b for b in self._buckets if b.start >= first}
        result = []
        for index in range(count):
            start = first + index * self.step
            result.append(held.get(round(start / self.step)) or self._make(start))
        return result


class Timeline:
    def __init__(
        self,
        step: float = 5.0,
        capacity: int = 720,
        *,
        volume_step: float = 60.0,
        volume_capacity: int = 60,
        max_patterns: int = 1000,
        max_services: int = 200,
    ) -> None:
        self._totals = BucketRing(step, capacity, Bucket)
        self._volume = BucketRing(volume_step, volume_capacity, VolumeBucket)
        self.max_patterns = max_patterns
        self.max_services = max_services

    @property
    def step(self) -> float:
        return self._totals.step

    @property
    def capacity(self) -> int:
        return self._totals.capacity

    @property
    def volume_step(self) -> float:
        return self._volume.step

    def observe(self, outcome: BatchOutcome, now: float) -> None:
        bucket = self._totals.at(now)
        bucket.kept += outcome.kept
        bucket.dropped += outcome.dropped
        bucket.rejected += outcome.rejected
        minute = self._volume.at(now)
        patterns = minute.patterns
        for (service, pattern_id, _), tally in outcome.patterns.items():
            key = (service, pattern_id)
            counts = patterns.get(key)
            if counts is None:
                counts = (
                    minute.untracked
                    if len(patterns) >= self.max_patterns
                    else patterns.setdefault(key, [0, 0])
                )
            kept = tally.kept
            counts[0] += kept
            counts[1] += tally.received - kept
        services = minute.services
        for (service, _), (received, kept) in outcome.records.items():  # per severity: fewer than patterns
            counts = services.get(service) or self._service_counts(services, service)
            counts[0] += received
            counts[1] += kept
        for service, (received, kept) in outcome.bytes.items():
            bucket.bytes_received += received
            bucket.bytes_kept += kept
            counts = services.get(service) or self._service_counts(services, service)
            counts[2] += received
            counts[3] += kept

    def _service_counts(self, services: dict[str, list[int]], service: str) -> list[int]:
        """A service's new counts, or those of OTHER_SERVICES once the minute holds `max_services`."""
        if len(services) >= self.max_services:
            service = OTHER_SERVICES
        return services.setdefault(service, [0, 0, 0, 0])

    def points(self, now: float, min_buckets: int = 12) -> list[Bucket]:
        """Totals per step from the oldest held (at least `min_buckets` back, at most `capacity`) up to
        the step of `now`, idle steps as empty buckets."""
        return self._totals.points(now, min_buckets)

    def totals(self, now: float | None = None) -> Bucket:
        """Everything held in one bucket (with `now`: only the last `capacity` steps up to it), its
        start the first bucket's."""
        held = list(self._totals) if now is None else self._totals.recent(now)
        total = Bucket(held[0].start if held else 0.0)
        for bucket in held:
            total.add(bucket)
        return total

    def services(self, now: float) -> dict[str, list[int]]:
        """Per service over the last `volume_capacity` minutes: [received, kept, bytes received,
        bytes kept]."""
        summed: dict[str, list[int]] = {}
        for minute in self._volume.recent(now):
            for service, counts in minute.services.items():
                into = summed.setdefault(service, [0, 0, 0, 0])
                for index, value in enumerate(counts):
                    into[index] += value
        return summed

    def pattern_volume(
        self, now: float, keys: Iterable[tuple[str, str]] | None = None, limit: int = 50
    ) -> tuple[list[float], dict[tuple[str, str], PatternSeries]]:
        """Per minute of the last `volume_capacity` (oldest first, the current minute last): the minutes'
        starts and the kept and dropped series of each (service, pattern id) of `keys`, or else of the
        `limit` busiest over those minutes. Keys no minute tracked are left out."""
        minutes = self._volume.points(now, self._volume.capacity)
        if keys is None:
            volume: dict[tuple[str, str], int] = {}
            for minute in minutes:
                for key, (kept, dropped) in minute.patterns.items():
                    volume[key] = volume.get(key, 0) + kept + dropped
            keys = sorted(volume, key=lambda key: (-volume[key], key))[:limit]
        width = len(minutes)
        series = {key: PatternSeries([0] * width, [0] * width) for key in keys}
        for index, minute in enumerate(minutes):
            for key, pair in series.items():
                counts = minute.patterns.get(key)
                if counts is not None:
                    pair.kept[index], pair.dropped[index] = counts
        return [minute.start for minute in minutes], {
            k: v for k, v in series.items() if any(v.kept) or any(v.dropped)
        }

    def untracked(self, now: float) -> tuple[int, int]:
        """Kept and dropped records of the last `volume_capacity` minutes in no tracked pattern."""
        minutes = self._volume.recent(now)
        return sum(m.untracked[0] for m in minutes), sum(m.untracked[1] for m in minutes)
