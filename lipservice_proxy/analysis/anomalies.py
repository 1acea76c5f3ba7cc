"""Anomalies in one closed interval: rate spikes, error surges per service, new patterns. Pure.

A count is surprising when it clears three bars at once: a z-score against the baseline (the
noise is at least Poisson's sqrt(expected), so a perfectly steady pattern does not get a zero
variance that makes any wobble infinite), a ratio floor over the expected count, and a minimum
number of records, so a pattern going from 1 to 4 records never fires. Spikes and surges need a
baseline of a few intervals; a new pattern needs the stats to have closed one interval already
(at start-up every pattern is new, and none is news), and a new id that only generalises or
specialises a template the stats already know for that service (the engine learned a constant was
a parameter, or a restarted engine has not learned it yet) is the same statement, not news.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..patterns.masking import token_kind
from ..patterns.template import accepts
from .stats import IntervalSnapshot, PatternWindow

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
    max_relative_checks: int = 2000  # known templates compared with one new pattern, at most


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


def _tokens(template: str) -> tuple[list[str], list[int]]:
    tokens = template.split()
    return tokens, [token_kind(token) for token in tokens]


def _related(a: tuple[list[str], list[int]], b: tuple[list[str], list[int]]) -> bool:
    """True when, token by token, one template accepts the other's token (in either direction)."""
    return all(
        accepts(x, x_kind, y, y_kind) or accepts(y, y_kind, x, x_kind)
        for x, x_kind, y, y_kind in zip(a[0], a[1], b[0], b[1], strict=True)
    )


def relatives(
    new: Iterable[PatternWindow], known: Iterable[tuple[str, str]], max_checks: int
) -> set[tuple[str, str]]:
    """The (service, pattern id) of each new window whose template is a generalisation or a
    specialisation of a known (service, template) of the same length."""
    index: dict[tuple[str, int], list[tuple[list[str], list[int]]]] = {}
    for service, template in known:
        tokens = _tokens(template)
        index.setdefault((service, len(tokens[0])), []).append(tokens)
    found = set()
    for window in new:
        tokens = _tokens(window.template)
        candidates = index.get((window.service, len(tokens[0])), [])[:max_checks]
        if any(_related(tokens, other) for other in candidates):
            found.add((window.service, window.pattern_id))
    return found


def detect(
    snapshot: IntervalSnapshot,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    known: Iterable[tuple[str, str]] = (),
) -> list[Anomaly]:
    """Every anomaly of the interval `snapshot` describes, spikes first. `known`: the (service,
    template) pairs the stats held before the interval, so relatives of them are not news."""
    duration, now = snapshot.duration, snapshot.end
    anomalies: list[Anomaly] = []
    fresh = [window for window in snapshot.patterns if window.new]
    familiar = relatives(fresh, known, thresholds.max_relative_checks) if fresh else set()
    new_patterns = [w for w in fresh if (w.service, w.pattern_id) not in familiar]
    for window in snapshot.patterns:
        if window.new:
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
