"""The analyzer's view of its fleet: reports go into the pattern statistics, samplers into a roster.

`report` feeds a validated report's patterns to `PatternStats` (as if the analyzer had sampled the
records itself) and its kept and dropped totals to the status page's `Timeline`, then notes the
sampler: its last report, the policy version it holds, and reports it missed (a gap in its sequence
numbers; a lower number means the sampler restarted). The roster is bounded: past `max_samplers`,
the longest silent samplers that have no open policy stream are forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..analysis.stats import PatternStats
from ..telemetry import Telemetry
from ..timeline import Timeline
from .wire import Report


@dataclass(slots=True)
class SamplerEntry:
    sampler_id: str
    peer: str = ""
    reports: int = 0
    missed_reports: int = 0
    last_sequence: int = -1
    records: int = 0
    policy_version: int = 0
    last_report: float = 0.0
    streams: int = 0  # open policy streams (normally 0 or 1)

    def as_dict(self) -> dict[str, Any]:
        last = datetime.fromtimestamp(self.last_report, UTC).isoformat() if self.last_report else None
        return {
            "sampler_id": self.sampler_id,
            "peer": self.peer,
            "connected": self.streams > 0,
            "reports": self.reports,
            "missed_reports": self.missed_reports,
            "records": self.records,
            "policy_version": self.policy_version,
            "last_report": last,
        }


class FleetBook:
    def __init__(
        self, stats: PatternStats, timeline: Timeline, telemetry: Telemetry, max_samplers: int = 10_000
    ) -> None:
        self._stats = stats
        self._timeline = timeline
        self._telemetry = telemetry
        self._max_samplers = max_samplers
        self._samplers: dict[str, SamplerEntry] = {}

    def __contains__(self, sampler_id: object) -> bool:
        entry = self._samplers.get(sampler_id) if isinstance(sampler_id, str) else None
        return entry is not None and entry.reports > 0

    def report(self, report: Report, peer: str, now: float) -> None:
        self._stats.observe(report.outcome, now)
        self._timeline.observe(report.outcome, now)
        if report.pattern_records:
            self._telemetry.fleet_reported_records.labels("pattern").inc(report.pattern_records)
        if report.other_records:
            self._telemetry.fleet_reported_records.labels("other").inc(report.other_records)
        entry = self._entry(report.sampler_id, peer)
        if report.sequence > entry.last_sequence + 1 and entry.last_sequence >= 0:
            entry.missed_reports += report.sequence - entry.last_sequence - 1
        entry.last_sequence = report.sequence
        entry.reports += 1
        entry.records += report.pattern_records + report.other_records
        entry.policy_version = report.policy_version
        entry.last_report = now

    def stream_opened(self, sampler_id: str, peer: str) -> None:
        self._entry(sampler_id, peer).streams += 1
        self._telemetry.fleet_samplers.inc()

    def stream_closed(self, sampler_id: str) -> None:
        self._telemetry.fleet_samplers.dec()
        entry = self._samplers.get(sampler_id)
        if entry is not None:
            entry.streams = max(0, entry.streams - 1)

    def view(self) -> list[dict[str, Any]]:
        return [entry.as_dict() for entry in sorted(self._samplers.values(), key=lambda e: e.sampler_id)]

    def _entry(self, sampler_id: str, peer: str) -> SamplerEntry:
        entry = self._samplers.get(sampler_id)
        if entry is None:
            if len(self._samplers) >= self._max_samplers:
                self._forget_silent()
            entry = self._samplers[sampler_id] = SamplerEntry(sampler_id)
        entry.peer = peer
        return entry

    def _forget_silent(self) -> None:
        idle = sorted((e for e in self._samplers.values() if not e.streams), key=lambda e: e.last_report)
        for entry in idle[: max(1, len(self._samplers) // 4)]:
            del self._samplers[entry.sampler_id]
