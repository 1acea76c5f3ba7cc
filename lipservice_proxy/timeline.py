"""Kept versus dropped over time, for the status page: a bounded ring of fixed-width buckets.

The pipeline hands every batch's outcome to `observe` (it is a `BatchObserver`), which adds the
batch's counts to the bucket of `now`. Buckets are `step` seconds wide and at most `capacity` are
kept (720 x 5 s: the last hour), so memory is fixed whatever the traffic; an idle stretch costs
nothing, and `points` fills it with zeros for the chart.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .sampling.decision import BatchOutcome


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


class Timeline:
    def __init__(self, step: float = 5.0, capacity: int = 720) -> None:
        if step <= 0 or capacity < 1:
            raise ValueError("step must be positive and capacity at least 1")
        self.step = step
        self.capacity = capacity
        self._buckets: deque[Bucket] = deque(maxlen=capacity)

    def observe(self, outcome: BatchOutcome, now: float) -> None:
        start = now - now % self.step
        buckets = self._buckets
        if not buckets or buckets[-1].start < start:
            buckets.append(Bucket(start))
        bucket = buckets[-1]  # a clock that stepped back adds to the newest bucket, never rewrites history
        bucket.kept += outcome.kept
        bucket.dropped += outcome.dropped
        bucket.rejected += outcome.rejected
        for received, kept in outcome.bytes.values():
            bucket.bytes_received += received
            bucket.bytes_kept += kept

    def points(self, now: float, min_buckets: int = 12) -> list[Bucket]:
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
            result.append(held.get(round(start / self.step)) or Bucket(start))
        return result

    def totals(self) -> Bucket:
        """Everything held (the last `capacity` steps) in one bucket."""
        total = Bucket(self._buckets[0].start if self._buckets else 0.0)
        for bucket in self._buckets:
            total.kept += bucket.kept
            total.dropped += bucket.dropped
            total.rejected += bucket.rejected
            total.bytes_received += bucket.bytes_received
            total.bytes_kept += bucket.bytes_kept
        return total
