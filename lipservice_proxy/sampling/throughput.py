"""A per-pattern throughput cap: lowers the keep rate so a pattern keeps about `limit` records/s.

As Refinery's EMA-throughput sampler, the arrival rate is an exponential moving average updated
once per interval, and the cap is limit / arrivals. Between updates the cap stays fixed, so the
sampler asks once per pattern per request, for all its arrivals.
"""

from __future__ import annotations

INTERVAL = 1.0
WEIGHT = 0.5  # weight of the newest interval in the moving average


class ThroughputCap:
    __slots__ = ("arrivals", "cap", "count", "started")

    def __init__(self) -> None:
        self.started = -1.0
        self.count = 0
        self.arrivals = 0.0  # records per second, moving average
        self.cap = 1.0

    def rate_cap(self, now: float, limit: float, arrivals: int = 1) -> float:
        """Count `arrivals` at `now` and return the keep-rate ceiling for this pattern."""
        if self.started < 0:
            self.started = now
        elapsed = now - self.started
        if elapsed >= INTERVAL:
            observed = self.count / elapsed
            self.arrivals = (
                observed if self.arrivals == 0.0 else WEIGHT * observed + (1 - WEIGHT) * self.arrivals
            )
            self.cap = min(1.0, limit / self.arrivals) if self.arrivals > 0 else 1.0
            self.started = now
            self.count = 0
        self.count += arrivals
        return self.cap
