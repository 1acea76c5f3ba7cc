"""Publishes a pattern engine's counters as the proxy's self-metrics.

The engine stays free of Prometheus; whoever owns it calls `publish(engine.stats())` now and then
(per batch or on a timer). Gauges take the current values, counters the growth since the last call.
"""

from __future__ import annotations

from ..telemetry import Telemetry
from .model import EngineStats


class StatsPublisher:
    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._last = EngineStats(templates=0, cache_entries=0, template_evictions=0, cache_evictions=0)

    def publish(self, stats: EngineStats) -> None:
        telemetry = self._telemetry
        telemetry.patterns_active.set(stats.templates)
        telemetry.pattern_cache_entries.set(stats.cache_entries)
        last = self._last
        for kind, now, before in (
            ("template", stats.template_evictions, last.template_evictions),
            ("cache", stats.cache_evictions, last.cache_evictions),
        ):
            if now > before:
                telemetry.pattern_evictions.labels(kind).inc(now - before)
        if stats.pattern_merges > last.pattern_merges:
            telemetry.pattern_merges.inc(stats.pattern_merges - last.pattern_merges)
        if stats.shed_lines > last.shed_lines:
            telemetry.pattern_shed_lines.inc(stats.shed_lines - last.shed_lines)
        self._last = stats
