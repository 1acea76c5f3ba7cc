"""The boost budget: which anomaly boosts may run at once. Pure.

A boost keeps a pattern at `anomaly_boost.rate` (usually 1.0) instead of its sampled rate, so it
costs the records it keeps on top: the pattern's sampled (below ERROR) records per second in the
last interval times the rate it adds. All boosts together may cost at most `anomaly_boost.max_share`
of the records received per second. Boosts are admitted by what they signal, error surges first,
then spikes, then new patterns (already-running boosts before new ones of the same kind, so a boost
is not dropped for a newcomer of equal rank); one that does not fit in what is left is declined
(or, if it was running, ended) and the next, cheaper, one is tried. Each pass plans again with the
costs of the interval just closed, so a boost whose pattern grew past the budget ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .anomalies import ERROR_SURGE, NEW_PATTERN, SPIKE

KIND_RANK = {ERROR_SURGE: 0, SPIKE: 1, NEW_PATTERN: 2}


@dataclass(frozen=True, slots=True)
class BoostRequest:
    pattern_id: str
    kind: str
    rate: float
    until: float
    reason: str
    cost: float = 0.0  # records per second the boost keeps on top of the sampled rate
    running: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    admitted: list[BoostRequest]
    declined: list[BoostRequest]
    budget: float  # records per second
    spent: float


def plan_boosts(requests: Iterable[BoostRequest], budget: float) -> Plan:
    """Admit `requests` in rank order while their summed cost fits in `budget` (records per second)."""
    ranked = sorted(requests, key=lambda r: (KIND_RANK.get(r.kind, len(KIND_RANK)), not r.running))
    admitted: list[BoostRequest] = []
    declined: list[BoostRequest] = []
    spent = 0.0
    for request in ranked:
        if spent + request.cost <= budget:
            admitted.append(request)
            spent += request.cost
        else:
            declined.append(request)
    return Plan(admitted, declined, budget, spent)
