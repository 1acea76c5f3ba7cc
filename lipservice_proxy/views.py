"""What the admin shows of a running proxy (`admin.AdminSource`): one method or property per view.

The proxy builds its `ProxyViews` from the parts it runs and hands it to the admin server, so the
admin reads views, never the service. A new read-out is a method here (and in `AdminSource`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .admin import policy_history
from .analysis.loop import AnalysisLoop
from .config import ProxyConfig
from .fleet.client import FleetClient
from .lifecycle import Lifecycle
from .patterns import PatternEngine
from .sampling.sampler import Sampler
from .sampling.store import PolicyStore, missing_policy_file
from .telemetry import Telemetry
from .timeline import Timeline


@dataclass(frozen=True, slots=True)
class ProxyViews:
    """A standalone proxy's views (`analysis` set) or a sampler's (`fleet` set)."""

    config: ProxyConfig
    lifecycle: Lifecycle
    telemetry: Telemetry
    timeline: Timeline
    sampler: Sampler
    policy_store: PolicyStore
    engine: PatternEngine
    analysis: AnalysisLoop | None
    fleet: FleetClient | None

    @property
    def ready(self) -> bool:
        return self.lifecycle.running

    def metrics_text(self) -> bytes:
        return self.telemetry.exposition()

    def policy_view(self) -> dict[str, Any]:
        config, store = self.config, self.policy_store
        view = {
            "current": self.sampler.policy.model_dump(mode="json"),
            "source": str(store.source) if store.source else "built-in default",
            "history": policy_history(
                (config.analysis.policy_file or config.sampler.policy_file).parent / "history"
            ),
        }
        if warning := missing_policy_file(config.sampler.policy_file, store.source_name):
            view["warnings"] = [warning]
        if self.fleet is not None:
            view["fleet"] = self.fleet.status()
        return view

    def patterns_view(self, limit: int) -> dict[str, Any]:
        if self.fleet is not None:
            return self.fleet.patterns_view(limit, self.sampler.resolve)
        assert self.analysis is not None
        view = self.analysis.patterns_view(limit)
        stats = self.engine.stats()
        # merges: pattern ids retired into another (they resolve to it); shed: lines not mined in a flood
        view["engine"] = {
            "templates": stats.templates,
            "pattern_merges": stats.pattern_merges,
            "shed_lines": stats.shed_lines,
        }
        return view

    def anomalies_view(self) -> list[dict[str, Any]]:
        # a fleet's samplers take boosts from the analyzer, which detects the anomalies
        return self.analysis.recent_anomalies_view() if self.analysis is not None else []
