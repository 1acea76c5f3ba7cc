"""The rows of the admin's patterns view (/api/v1/patterns, the status page, the demo), built here
for the analysis loop (standalone proxy, fleet analyzer) and the fleet sampler alike.

A row shows the rate of the pattern's busiest level below ERROR (`busiest_sampled_level`), with the
label and reason of its `RateSource`; an anomaly boost shows instead as what it is, and a pattern
whose records were all ERROR or FATAL shows rate 1, protected: every one of them was kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from .config import SEVERITY_NAMES
from .sampling.boosts import Boost
from .sampling.rates import PROTECTED, RateSource, Resolved, busiest_sampled_level
from .sampling.severity import ERROR

Resolve = Callable[[str, str, str], Resolved]  # (service, pattern id, template): Sampler.resolve


def iso_time(timestamp: float) -> str:
    """A Unix time as an ISO 8601 UTC text with microseconds, as the admin API shows times."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def shown_rate(counts: Sequence[int], resolved: Resolved, boost: Boost | None) -> tuple[float, RateSource]:
    """The rate a pattern with `counts` (records per level) is shown with, and where it came from."""
    if any(counts) and not any(counts[:ERROR]):
        return 1.0, PROTECTED
    if boost is not None:
        return boost.rate, RateSource.boost(boost.reason)
    rates, sources = resolved
    level = busiest_sampled_level(counts)
    return rates[level], sources[level]


def pattern_row(
    service: str,
    pattern_id: str,
    template: str,
    counts: Sequence[int],
    kept: int,
    *,
    resolve: Resolve,
    boost: Boost | None,
) -> dict[str, Any]:
    """One pattern's row: what it received per severity and kept, its rate, rule and reason."""
    rate, source = shown_rate(counts, resolve(service, pattern_id, template), boost)
    return {
        "id": pattern_id,
        "template": template,
        "service": service,
        "counts": {name: n for name, n in zip(SEVERITY_NAMES, counts, strict=True) if n},
        "received": sum(counts),
        "kept": kept,
        "rate": rate,
        "rule": source.label,
        "reason": source.reason,
    }


def boost_rows(boosts: Iterable[Boost]) -> list[dict[str, Any]]:
    return [
        {"pattern_id": b.pattern_id, "rate": b.rate, "until": iso_time(b.until), "reason": b.reason}
        for b in boosts
    ]
