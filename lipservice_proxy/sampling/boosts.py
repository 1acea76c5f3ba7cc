"""Anomaly boosts: a pattern temporarily sampled at a higher rate (usually 1.0) until a deadline.

The analysis loop adds boosts, and ends those its budget has no room for (analysis/budget.py); the
sampler asks `rate(pattern_id, now)`. Expired boosts are pruned on access and in `active`, so the
table stays as small as the set of live anomalies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Boost:
    pattern_id: str
    rate: float
    until: float
    reason: str


class BoostTable:
    def __init__(self) -> None:
        self._boosts: dict[str, Boost] = {}

    def __bool__(self) -> bool:
        return bool(self._boosts)

    def boost(self, pattern_id: str, rate: float, until: float, reason: str) -> None:
        current = self._boosts.get(pattern_id)
        if current is None or until > current.until or rate > current.rate:
            self._boosts[pattern_id] = Boost(
                pattern_id, max(rate, current.rate if current else 0.0), until, reason
            )

    def end(self, pattern_id: str) -> None:
        """End a boost before its deadline (the analysis loop's budget no longer has room for it)."""
        self._boosts.pop(pattern_id, None)

    def rate(self, pattern_id: str, now: float) -> float | None:
        boost = self._boosts.get(pattern_id)
        if boost is None:
            return None
        if boost.until <= now:
            del self._boosts[pattern_id]
            return None
        return boost.rate

    def active(self, now: float) -> list[Boost]:
        for pattern_id in [p for p, b in self._boosts.items() if b.until <= now]:
            del self._boosts[pattern_id]
        return sorted(self._boosts.values(), key=lambda b: b.until)
