"""Anomalies in one closed interval: rate spikes, error surges per service, new patterns. Pure.

A count is surprising when it clears three bars at once: a z-score against the baseline (the
noise is at least Poisson's sqrt(expected), so a perfectly steady pattern does not get a zero
variance that makes any wobble infinite), a ratio floor over the expected count, and a minimum
number of records, so a pattern going from 1 to 4 records never fires. Spikes and surges need a
baseline of a few intervals; a new pattern needs the stats to have closed one interval already
(at start-up every pattern is new, and none is news).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from .stats import IntervalSnapshot

log = logging.getLogger(__name__)

SPIKE, ERROR_SURGE, NEW_PATTERN = "spike", "error_surge", "new_pattern"


@dataclass(frozen=True, slots=True)
class Thresholds:
    min_z: float = 4.0
    min_ratio: float = 3.0
    min_records: int = 20
    min_baseline_intervals: int = 2
    max_patterns_per_anomaly: int = 100  # an error surge boosts at most this many of the service's patterns
    max_new_patterns: int = 100  # per pass; a deploy that changes every line is one event, not thousands


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str
    service: str
    pattern_ids: tuple[str, ...]
    count: int
    expected: float
    score: float
    detected_at: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "service": self.service,
            "patterns": list(self.pattern_ids),
            "count": self.count,
            "expected": round(self.expected, 2),
            "score": round(self.score, 2) if math.isfinite(self.score) else None,
            "detected_at": self.detected_at,
            "message": self.message,
        }


def surprise(count: int, rate: float, rate_std: float, duration: float) -> tuple[float, float]:
    """(expected count, z-score) of `count` records in `duration` seconds against a baseline rate."""
    expected = rate * duration
    noise = max(rate_std * duration, math.sqrt(expected), 1.0)
    return expected, (count - expected) / noise


def _unusual(count: int, expected: float, score: float, thresholds: Thresholds) -> bool:
    return (
        count >= thresholds.min_records
        and score >= thresholds.min_z
        and count >= thresholds.min_ratio * expected
    )


def detect(snapshot: IntervalSnapshot, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Anomaly]:
    """Every anomaly of the interval `snapshot` describes, spikes first."""
    duration, now = snapshot.duration, snapshot.end
    anomalies: list[Anomaly] = []
    new_patterns = []
    for window in snapshot.patterns:
        if window.new:
            new_patterns.append(window)
            continue
        if window.baseline_intervals < thresholds.min_baseline_intervals:
            continue
        expected, score = surprise(window.received, window.baseline, window.baseline_std, duration)
        if _unusual(window.received, expected, score, thresholds):
            anomalies.append(
                Anomaly(
                    SPIKE,
                    window.service,
                    (window.pattern_id,),
                    window.received,
                    expected,
                    score,
                    now,
                    f"{window.received} records where {expected:.0f} were expected "
                    f"(x{window.received / max(expected, 1e-9):.1f}, z={score:.1f})",
                )
            )
    for service in snapshot.services:
        if service.baseline_intervals < thresholds.min_baseline_intervals:
            continue
        expected, score = surprise(service.errors, service.baseline, service.baseline_std, duration)
        if _unusual(service.errors, expected, score, thresholds):
            busiest = sorted(
                (w for w in snapshot.patterns if w.service == service.service),
                key=lambda w: (-w.received, w.pattern_id),
            )
            anomalies.append(
                Anomaly(
                    ERROR_SURGE,
                    service.service,
                    tuple(w.pattern_id for w in busiest[: thresholds.max_patterns_per_anomaly]),
                    service.errors,
                    expected,
                    score,
                    now,
                    f"{service.errors} ERROR+ records where {expected:.0f} were expected (z={score:.1f})",
                )
            )
    new_patterns.sort(key=lambda w: (-w.protected, -w.received, w.pattern_id))
    if len(new_patterns) > thresholds.max_new_patterns:
        log.warning(
            "%d new patterns in one interval; flagging the first %d",
            len(new_patterns),
            thresholds.max_new_patterns,
        )
    for window in new_patterns[: thresholds.max_new_patterns]:
        errors = f", {window.protected} of them ERROR+" if window.protected else ""
        anomalies.append(
            Anomaly(
                NEW_PATTERN,
                window.service,
                (window.pattern_id,),
                window.received,
                0.0,
                math.inf,
                now,
                f"first seen: {window.received} records{errors}",
            )
        )
    return anomalies
