"""The deterministic policy: from a volume target to per-pattern rates, with its reasoning.

Budget: the target keeps `target_keep_ratio` of all records. ERROR+ records are always kept and
every pattern keeps its first N per window; both come out of the budget first. What is left is
shared between patterns in proportion to the logarithm of their volume (the idea behind
Refinery's and Cribl's dynamic samplers): a pattern ten times busier gets only a little more
room, so frequent patterns are sampled hardest and rare ones are kept. Shares are filled from the
smallest pattern up; a pattern that needs less than its share is kept in full and hands the rest
on to the busier ones. Same input, same policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..sampling.policy import FirstPerWindow
from ..sampling.window import first_keeps
from .guardrails import Candidate, RateChange
from .stats import PatternVolume

HEADROOM = 0.9  # plan under the target: first-per-window keeps and new patterns come on top


def heuristic_candidate(
    volumes: Sequence[PatternVolume],
    *,
    target_keep_ratio: float,
    duration: float,
    first_per_window: FirstPerWindow,
    min_rate: float,
) -> Candidate:
    total = sum(v.received for v in volumes)
    protected = sum(v.protected for v in volumes)
    firsts = {
        v.pattern_id: first_keeps(v.sampleable, first_per_window.count, first_per_window.window, duration)
        for v in volumes
    }
    budget = HEADROOM * target_keep_ratio * total - protected - sum(firsts.values())
    rest = {v.pattern_id: v.sampleable - firsts[v.pattern_id] for v in volumes if v.sampleable}
    weights = {pattern_id: math.log10(1 + count) for pattern_id, count in rest.items()}

    rates: dict[str, RateChange] = {}
    remaining_budget, remaining_weight = max(budget, 0.0), sum(weights.values())
    by_template = {v.pattern_id: v.template for v in volumes}
    for pattern_id in sorted(rest, key=lambda p: (rest[p], p)):
        count, weight = rest[pattern_id], weights[pattern_id]
        share = remaining_budget * weight / remaining_weight if remaining_weight > 0 else 0.0
        remaining_weight -= weight
        if count == 0 or share >= count:
            remaining_budget -= count
            rates[pattern_id] = RateChange(1.0, f"rare: {count + firsts[pattern_id]} records")
            continue
        remaining_budget -= share
        rate = max(share / count, min_rate)
        rates[pattern_id] = RateChange(rate, f"{100 * (count + firsts[pattern_id]) / total:.1f}% of records")

    return Candidate(
        generated_by="heuristic",
        reasoning=_reasoning(
            volumes, rates, by_template, total, protected, firsts, budget, target_keep_ratio
        ),
        pattern_rates=rates,
    )


def _reasoning(
    volumes: Sequence[PatternVolume],
    rates: dict[str, RateChange],
    templates: dict[str, str],
    total: int,
    protected: int,
    firsts: dict[str, int],
    budget: float,
    target: float,
) -> str:
    if not total:
        return "Heuristic: no records in the interval; rates unchanged."
    lines = [
        f"Heuristic (log-scaled dynamic sampling): target keeps {target:.1%} of {total} records "
        f"(planned at {HEADROOM:.0%} of it). "
        f"{protected} ERROR+ records ({protected / total:.1%}) are always kept and "
        f"{sum(firsts.values())} first-per-window records are kept, leaving {max(budget, 0):.0f} records "
        f"shared by {len(rates)} patterns in proportion to log10 of their volume."
    ]
    if budget <= 0:
        lines.append("The always-kept records exceed the target: every sampled pattern gets the lowest rate.")
    full = sum(1 for change in rates.values() if change.rate >= 1.0)
    lines.append(f"{full} rare patterns are kept in full.")
    busiest = next((v for v in volumes if v.pattern_id in rates), None)
    if busiest is not None:
        template = templates[busiest.pattern_id]
        lines.append(
            f"The busiest, {template[:80]!r} ({busiest.received / total:.1%} of records), "
            f"is proposed at {rates[busiest.pattern_id].rate:.4g}."
        )
    return " ".join(lines)
