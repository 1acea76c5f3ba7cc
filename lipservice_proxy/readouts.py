"""The status page's read-outs as JSON-ready data (`GET /api/v1/summary`; the page renders the same
dict): the last hour's totals with projected costs, a per-service breakdown, each pattern's kept and
dropped records per minute, and the last hour's anomalies with their boosts.

Pure: everything comes from the `Timeline`, the configured price and the anomalies handed in.
Costs are projections: the bytes of the timeline's window (the last hour, or since the first record
when that is shorter, at least one step) as a rate, times a day, times a 30-day month.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .pattern_view import iso_time
from .timeline import Bucket, Timeline

SECONDS_PER_DAY = 86_400
DAYS_PER_MONTH = 30
GIB = 1 << 30


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def measured_window(totals: Bucket, now: float, step: float) -> float:
    """Seconds the totals were measured over: from their first step to `now`, at least one step."""
    if not totals.received and not totals.bytes_received:
        return step
    return max(now - totals.start, step)


def cost_projection(totals: Bucket, window: float, price_per_gib: float) -> dict[str, Any]:
    """GiB and cost per day and per 30-day month of the bytes received, kept and saved in `window` s."""
    per_day = SECONDS_PER_DAY / window
    gib_per_day = {
        "received": totals.bytes_received / GIB * per_day,
        "kept": totals.bytes_kept / GIB * per_day,
        "saved": (totals.bytes_received - totals.bytes_kept) / GIB * per_day,
    }
    cost_per_day = {name: gib * price_per_gib for name, gib in gib_per_day.items()}
    return {
        "price_per_gib": price_per_gib,
        "window_seconds": window,
        "gib_per_day": gib_per_day,
        "per_day": cost_per_day,
        "per_month": {name: cost * DAYS_PER_MONTH for name, cost in cost_per_day.items()},
    }


def services_view(timeline: Timeline, now: float) -> list[dict[str, Any]]:
    """Per service over the last hour, busiest (in bytes received) first."""
    rows = [
        {
            "service": service,
            "received": received,
            "kept": kept,
            "dropped": received - kept,
            "keep_ratio": _ratio(kept, received),
            "bytes_received": bytes_received,
            "bytes_kept": bytes_kept,
            "bytes_saved": bytes_received - bytes_kept,
        }
        for service, (received, kept, bytes_received, bytes_kept) in timeline.services(now).items()
    ]
    rows.sort(key=lambda row: (-row["bytes_received"], -row["received"], row["service"]))
    return rows


def pattern_volume_view(
    timeline: Timeline, now: float, keys: Iterable[tuple[str, str]] | None = None, limit: int = 50
) -> dict[str, Any]:
    """Kept and dropped records per minute of the last hour for the (service, pattern id) `keys`, or
    for the `limit` busiest patterns; `untracked` counts the records of patterns past the bound."""
    starts, series = timeline.pattern_volume(now, keys, limit)
    untracked_kept, untracked_dropped = timeline.untracked(now)
    return {
        "step_seconds": timeline.volume_step,
        "start": iso_time(starts[0]),
        "patterns": [
            {"service": service, "id": pattern_id, "kept": pair.kept, "dropped": pair.dropped}
            for (service, pattern_id), pair in series.items()
        ],
        "untracked": {"kept": untracked_kept, "dropped": untracked_dropped},
    }


def summary_view(
    timeline: Timeline,
    now: float,
    *,
    price_per_gib: float | None,
    anomalies: list[dict[str, Any]],
    pattern_keys: Iterable[tuple[str, str]] | None = None,
    pattern_limit: int = 50,
) -> dict[str, Any]:
    totals = timeline.totals(now)
    window = measured_window(totals, now, timeline.step)
    saved = totals.bytes_received - totals.bytes_kept
    return {
        "window": {"start": iso_time(now - window), "end": iso_time(now), "seconds": window},
        "totals": {
            "received": totals.received,
            "kept": totals.kept,
            "dropped": totals.dropped,
            "rejected": totals.rejected,
            "keep_ratio": _ratio(totals.kept, totals.received),
            "bytes_received": totals.bytes_received,
            "bytes_kept": totals.bytes_kept,
            "bytes_saved": saved,
        },
        "cost": None if price_per_gib is None else cost_projection(totals, window, price_per_gib),
        "services": services_view(timeline, now),
        "pattern_volume": pattern_volume_view(timeline, now, pattern_keys, pattern_limit),
        "anomalies": anomalies,
    }
