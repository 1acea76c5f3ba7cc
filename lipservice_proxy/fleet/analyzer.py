"""The analyzer role: the fleet's statistics, one analysis loop for all samplers, the PolicyService.

No receivers and no exporters: records never reach the analyzer, only the samplers' reports of
them. They feed the same `PatternStats` a standalone proxy feeds from its pipeline, so the analysis
loop (anomaly boosts, clustering, the LLM or the heuristic, guardrails, the policy file) runs
unchanged, once for the fleet. Every policy the store takes up (generated, or the operator's) and
every boost the loop adds is published to the samplers' streams.

Admin (:8888): /readyz once the PolicyService listens, /api/v1/patterns the fleet's aggregate,
/api/v1/policy the policy samplers get, /api/v1/fleet the samplers seen (last report, policy version
they hold, open stream).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..admin import AdminServer, json_response, policy_history
from ..analysis.loop import AnalysisLoop
from ..analysis.stats import PatternStats
from ..auth import BearerAuthenticator
from ..config import MIB, ProxyConfig
from ..lifecycle import Deadline, Lifecycle
from ..sampling.boosts import BoostTable
from ..sampling.policy import Policy
from ..sampling.rates import RateTable, Resolved
from ..sampling.store import PolicyStore
from ..telemetry import Telemetry
from ..timeline import Timeline
from .book import FleetBook
from .feed import PolicyFeed
from .server import PolicyServer

log = logging.getLogger(__name__)


class FleetPolicy:
    """What the analysis loop needs of a sampler (`SamplerView`), without sampling anything: the
    policy in force, its rates, and the boost table whose entries are published."""

    def __init__(self, policy: Policy, boosts: BoostTable) -> None:
        self._boosts = boosts
        self.set_policy(policy)

    def set_policy(self, policy: Policy) -> None:
        self._policy = policy
        self._rates = RateTable(policy)

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def boosts(self) -> BoostTable:
        return self._boosts

    def resolve(self, service: str, pattern_id: str, template: str) -> Resolved:
        return self._rates.resolve(service, pattern_id, template)


@dataclass(frozen=True, slots=True)
class AnalyzerViews:
    """What the admin shows of the analyzer (`admin.AdminSource`), and its /api/v1/fleet."""

    config: ProxyConfig
    lifecycle: Lifecycle
    readiness: Callable[[], bool] | None  # more to be ready than listening (the workers of --workers)
    telemetry: Telemetry
    timeline: Timeline
    policy_store: PolicyStore
    fleet_policy: FleetPolicy
    feed: PolicyFeed
    book: FleetBook
    analysis: AnalysisLoop

    @property
    def ready(self) -> bool:
        return self.lifecycle.running and (self.readiness is None or self.readiness())

    def metrics_text(self) -> bytes:
        return self.telemetry.exposition()

    def policy_view(self) -> dict[str, Any]:
        source = self.policy_store.source
        return {
            "current": self.fleet_policy.policy.model_dump(mode="json"),
            "source": str(source) if source else "built-in default",
            "history": policy_history(self.config.analysis.policy_file.parent / "history"),
            "revision": self.feed.revision,
        }

    def patterns_view(self, limit: int) -> dict[str, Any]:
        return self.analysis.patterns_view(limit)

    def anomalies_view(self) -> list[dict[str, Any]]:
        return self.analysis.recent_anomalies_view()

    def fleet_view(self) -> dict[str, Any]:
        return {
            "role": "analyzer",
            "policy_version": self.feed.version,
            "revision": self.feed.revision,
            "samplers": self.book.view(),
        }


class Analyzer:
    def __init__(
        self,
        config: ProxyConfig,
        *,
        environ: Mapping[str, str] = os.environ,
        listen: str | None = None,
        extra_routes: Sequence[web.RouteDef] = (),
        readiness: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.telemetry = telemetry = Telemetry()
        self.lifecycle = Lifecycle("analyzer")

        self.policy_store = PolicyStore(
            [config.sampler.policy_file, config.analysis.policy_file], Policy(), telemetry
        )
        policy = self.policy_store.load_initial()
        message_bytes = int(config.fleet.max_message_mib * MIB)
        # a snapshot is the policy plus its boosts: keep a quarter of the message for the boosts
        self.feed = PolicyFeed(policy, max_bytes=message_bytes * 3 // 4)
        self.fleet_policy = FleetPolicy(policy, self.feed.boosts)
        self.policy_store.subscribe(self.fleet_policy.set_policy)
        self.policy_store.subscribe(self.feed.publish)

        self.stats = PatternStats()
        self.timeline = Timeline()  # the fleet's kept vs dropped, for the status page
        self.book = FleetBook(self.stats, self.timeline, telemetry)
        self.analysis = AnalysisLoop(
            config.analysis,
            stats=self.stats,
            sampler=self.fleet_policy,
            store=self.policy_store,
            telemetry=telemetry,
            policy_path=config.analysis.policy_file,
            environ=environ,
        )
        self.server = PolicyServer(
            listen or config.fleet.listen,
            feed=self.feed,
            book=self.book,
            telemetry=telemetry,
            auth=BearerAuthenticator.from_config(config.fleet.auth, environ),
            max_message_bytes=message_bytes,
        )
        self.views = AnalyzerViews(
            config=config,
            lifecycle=self.lifecycle,
            readiness=readiness,
            telemetry=telemetry,
            timeline=self.timeline,
            policy_store=self.policy_store,
            fleet_policy=self.fleet_policy,
            feed=self.feed,
            book=self.book,
            analysis=self.analysis,
        )
        self.admin = (
            AdminServer(
                config.admin,
                self.views,
                auth=BearerAuthenticator.from_config(config.admin.auth, environ),
                extra_routes=[web.get("/api/v1/fleet", self._fleet_route), *extra_routes],
                proposals=self.analysis if config.analysis.enabled else None,
            )
            if config.admin.enabled
            else None
        )
        self._add_steps()

    def _add_steps(self) -> None:
        """Start-up order; shutdown runs it backwards: the PolicyService ends every stream first."""
        steps = self.lifecycle
        if self.admin is not None:
            admin = self.admin
            steps.add("admin", start=admin.start, shutdown=lambda _: admin.shutdown())
        steps.add("analysis", shutdown=lambda _: self.analysis.shutdown())
        steps.add("background tasks", start=self._spawn_background, shutdown=lambda _: steps.tasks.shutdown())
        steps.add(
            "policy service",
            start=self.server.start,
            shutdown=lambda d: self.server.shutdown(grace=d.share(1.0, 1.0)),
        )

    async def _spawn_background(self) -> None:
        tasks = self.lifecycle.tasks
        tasks.spawn(
            self.policy_store.watch(self.config.sampler.reload_interval, tasks.stopping), "policy-watch"
        )
        if self.config.analysis.enabled:
            tasks.spawn(self.analysis.run(tasks.stopping), "analysis")

    async def start(self) -> None:
        await self.lifecycle.start()

    async def shutdown(self, drain_seconds: float = 10.0) -> None:
        await self.lifecycle.shutdown(Deadline.after(drain_seconds))

    @property
    def ports(self) -> dict[str, int]:
        return {"fleet": self.server.port, "admin": self.admin.port if self.admin else 0}

    async def _fleet_route(self, request: web.Request) -> web.Response:
        return json_response(self.views.fleet_view())
