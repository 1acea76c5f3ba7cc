"""The running proxy: builds components back to front, starts exporters first, stops receivers first.

Build order follows the data backwards (telemetry, exporters and their queues, policy, patterns,
sampler, pipeline, receivers, admin), so every component is handed its downstream at construction.
Start-up opens exporters before receivers, so nothing is accepted that could not be queued; shutdown
closes receivers first, then drains the queues within the deadline, then closes exporters.

Roles (`run --role`): a standalone proxy runs its own analysis loop; a sampler runs none and reports
its pattern counts to the fleet's analyzer instead, taking the policy from the analyzer's stream
(lipservice_proxy/fleet). The analyzer role is `fleet.analyzer.Analyzer`: no receivers at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Mapping
from typing import Literal, Protocol

from .admin import AdminServer
from .analysis.loop import AnalysisLoop
from .analysis.stats import PatternStats
from .auth import BearerAuthenticator
from .config import ProxyConfig
from .errors import PatternStoreError
from .exporters import build_exporter
from .exporters.queue import ExportQueue, Fanout
from .fleet.client import FleetClient
from .lifecycle import ROLLBACK_SECONDS, Deadline, Lifecycle
from .listen import RESERVED_FILES, raise_open_file_limit
from .memlimit import MemoryLimiter
from .patterns import PatternEngine
from .patterns.metrics import StatsPublisher
from .pipeline import LogsPipeline
from .receivers.grpc import GrpcReceiver
from .receivers.handler import LogsHandler, ReceiverContext
from .receivers.http import HttpReceiver
from .receivers.passthrough import Passthrough
from .sampling.policy import Policy
from .sampling.sampler import Sampler
from .sampling.store import PolicyStore, missing_policy_file
from .telemetry import Telemetry
from .timeline import Timeline
from .views import ProxyViews

log = logging.getLogger(__name__)


class Proxy:
    def __init__(
        self,
        config: ProxyConfig,
        *,
        environ: Mapping[str, str] = os.environ,
        reuse_port: bool = False,
        role: Literal["standalone", "sampler"] = "standalone",
    ) -> None:
        self.config = config
        self.telemetry = telemetry = Telemetry()
        self.lifecycle = Lifecycle("proxy")

        self.queues = [
            ExportQueue(build_exporter(exporter, environ=environ), exporter.queue, exporter.retry, telemetry)
            for exporter in config.exporters
        ]
        fanout = Fanout(self.queues)

        policy_paths = [config.sampler.policy_file]
        if role != "sampler":  # a sampler generates nothing: the analyzer's stream takes that place
            policy_paths.append(config.analysis.policy_file)
        self.policy_store = PolicyStore(policy_paths, Policy(), telemetry)  # model defaults = built-in policy
        policy = self.policy_store.load_initial()
        if warning := missing_policy_file(config.sampler.policy_file, self.policy_store.source_name):
            log.warning(warning)

        self.engine = self._load_engine()
        self.sampler = Sampler(
            self.engine,
            policy,
            always_keep_min_severity=config.sampler.always_keep_min_severity,
            dry_run=config.sampler.dry_run,
            limits=config.receivers.limits,
        )
        self.policy_store.subscribe(self.sampler.set_policy)
        self.memory_limiter = (
            MemoryLimiter(config.memory_limiter, telemetry) if config.memory_limiter.enabled else None
        )
        self.pipeline = LogsPipeline(
            self.sampler,
            fanout,
            telemetry,
            admission=self.memory_limiter,
            summaries=config.sampler.summaries,
        )
        self.timeline = Timeline()  # kept vs dropped for the status page
        self.pipeline.add_observer(self.timeline)
        self.fleet: FleetClient | None = None
        self.analysis: AnalysisLoop | None = None
        if role == "sampler":
            self.fleet = FleetClient(
                config.fleet,
                store=self.policy_store,
                boosts=self.sampler.boosts,
                telemetry=telemetry,
                environ=environ,
            )
            self.pipeline.add_observer(self.fleet.window)
        else:
            self.stats = PatternStats()
            self.pipeline.add_observer(self.stats)
            self.analysis = AnalysisLoop(
                config.analysis,
                stats=self.stats,
                sampler=self.sampler,
                store=self.policy_store,
                telemetry=telemetry,
                # a loop that is off writes nothing and restores nothing: it only keeps the stats the
                # status page shows (a demo or a test run leaves no state behind for the next one)
                policy_path=config.analysis.policy_file if config.analysis.enabled else None,
                environ=environ,
            )
        handler = LogsHandler(self.pipeline)

        passthrough_config = config.passthrough
        self.passthrough = (
            Passthrough(passthrough_config, telemetry)
            if passthrough_config.traces or passthrough_config.metrics
            else None
        )
        receivers = config.receivers
        context = ReceiverContext(
            handler,
            telemetry,
            passthrough=self.passthrough,
            auth=BearerAuthenticator.from_config(receivers.auth, environ),
            reuse_port=reuse_port,
        )
        tls = receivers.tls
        self.grpc = GrpcReceiver(receivers.grpc, context, tls=tls) if receivers.grpc.enabled else None
        self.http = HttpReceiver(receivers.http, context, tls=tls) if receivers.http.enabled else None
        self.views = ProxyViews(
            config=config,
            lifecycle=self.lifecycle,
            telemetry=telemetry,
            timeline=self.timeline,
            sampler=self.sampler,
            policy_store=self.policy_store,
            engine=self.engine,
            analysis=self.analysis,
            fleet=self.fleet,
        )
        # a sampler's proposals are the analyzer's; a loop that is off makes none
        desk = self.analysis if config.analysis.enabled else None
        self.admin = (
            AdminServer(
                config.admin,
                self.views,
                auth=BearerAuthenticator.from_config(config.admin.auth, environ),
                proposals=desk,
            )
            if config.admin.enabled
            else None
        )
        self._add_steps()

    def _load_engine(self) -> PatternEngine:
        settings = self.config.patterns
        if settings.state_file is not None and settings.state_file.exists():
            return PatternEngine.load(
                settings.state_file, max_templates=settings.max_templates, cache_size=settings.cache_size
            )
        return PatternEngine(max_templates=settings.max_templates, cache_size=settings.cache_size)

    # ---- lifecycle ----

    def _add_steps(self) -> None:
        """Start-up order; shutdown runs it backwards: receivers stop, background tasks end, the fleet
        gets the last window, open tails leave as summaries, the queues drain, then the rest closes."""
        steps = self.lifecycle
        if self.admin is not None:
            admin = self.admin
            steps.add("admin", start=admin.start, shutdown=lambda _: admin.shutdown())
        steps.add("pattern state", shutdown=self._save_last_patterns)
        if self.analysis is not None:
            analysis = self.analysis
            steps.add("analysis", shutdown=lambda _: analysis.shutdown())
        if self.passthrough is not None:
            passthrough = self.passthrough
            steps.add("passthrough", start=passthrough.start, shutdown=lambda _: passthrough.shutdown())
        steps.add("queues", start=self._start_queues, shutdown=self._drain_queues)
        steps.add("open tails", shutdown=lambda _: self._account_for_open_tails())
        if self.fleet is not None:
            fleet = self.fleet
            # no record arrives any more by then: the last window is complete
            steps.add(
                "fleet",
                start=fleet.start,
                shutdown=lambda d: fleet.shutdown(report_seconds=d.share(0.25, 2.0)),
            )
        steps.add("background tasks", start=self._spawn_background, shutdown=lambda _: steps.tasks.shutdown())
        steps.add("receivers", start=self._start_receivers, shutdown=self._stop_receivers)

    async def start(self) -> None:
        await self.lifecycle.start()
        if self.fleet is not None:
            self.fleet.announce()

    async def shutdown(self, drain_seconds: float = 10.0) -> int:
        """Stop receiving, flush queued records upstream within `drain_seconds`, then close everything.
        Returns how many acknowledged records were dropped (memory queues' leftovers at the deadline)."""
        return await self.lifecycle.shutdown(Deadline.after(drain_seconds))

    async def _start_queues(self) -> None:
        for started, queue in enumerate(self.queues):
            try:
                await queue.start()
            except BaseException:  # e.g. a disk queue's directory held by another process
                await self._drain_queues(Deadline.after(ROLLBACK_SECONDS), self.queues[:started])
                raise

    async def _drain_queues(self, deadline: Deadline, queues: list[ExportQueue] | None = None) -> int:
        drained = self.queues if queues is None else queues
        return sum(await asyncio.gather(*(queue.shutdown(deadline.at) for queue in drained)))

    async def _spawn_background(self) -> None:
        tasks = self.lifecycle.tasks
        if self.memory_limiter is not None:
            self.memory_limiter.measure()  # before the receivers open: the first request is judged too
            tasks.spawn(self.memory_limiter.run(), "memory-limiter")
        tasks.spawn(
            self.policy_store.watch(self.config.sampler.reload_interval, tasks.stopping), "policy-watch"
        )
        tasks.spawn(self._refresh_gauges(), "gauges")
        tasks.spawn(self._send_summaries_periodically(), "summaries")
        if self.config.patterns.state_file is not None:
            tasks.spawn(self._save_patterns_periodically(), "patterns-save")
        if self.analysis is not None and self.config.analysis.enabled:
            tasks.spawn(self.analysis.run(tasks.stopping), "analysis")

    async def _start_receivers(self) -> None:
        receivers = self.config.receivers
        raise_open_file_limit(
            RESERVED_FILES + sum(r.max_connections for r in (receivers.grpc, receivers.http) if r.enabled)
        )
        try:
            if self.grpc is not None:
                await self.grpc.start()
            if self.http is not None:
                await self.http.start()
        except BaseException:  # one cannot listen: close the other too
            await self._stop_receivers(Deadline.after(ROLLBACK_SECONDS))
            raise

    async def _stop_receivers(self, deadline: Deadline) -> None:
        grace = deadline.share(0.25, 2.0)
        await asyncio.gather(*(r.shutdown(grace) for r in (self.grpc, self.http) if r is not None))

    async def _refresh_gauges(self) -> None:
        publisher = StatsPublisher(self.telemetry)
        while True:
            publisher.publish(self.engine.stats())
            await asyncio.sleep(1.0)

    async def _send_summaries_periodically(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.pipeline.send_summaries()
            except Exception:  # a summary task that dies silently would stop counting
                log.exception("sending summary records failed; will retry")

    async def _account_for_open_tails(self) -> None:
        """Before the queues drain: every open tail leaves as a summary record (or is logged)."""
        await self.pipeline.send_summaries(everything=True)
        if self.pipeline.unaccounted:
            log.warning(
                "%d dropped records left without a lipservice.count (sampler.summaries is %s)",
                self.pipeline.unaccounted,
                "on, but no queue took them" if self.config.sampler.summaries else "off",
            )

    async def _save_patterns_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.patterns.save_interval)
            self._save_patterns()

    async def _save_last_patterns(self, _: Deadline) -> None:
        self._save_patterns()

    def _save_patterns(self) -> None:
        """Save the learned templates; a failure is logged and counted, never raised: it must not end
        the periodic save nor the shutdown (the state is an optimisation, records do not depend on it)."""
        path = self.config.patterns.state_file
        if path is None:
            return
        try:
            self.engine.save(path)
        except PatternStoreError as exc:
            self.telemetry.pattern_state_saves.labels("error").inc()
            log.error("cannot save pattern state: %s", exc)
        except Exception:
            self.telemetry.pattern_state_saves.labels("error").inc()
            log.exception("cannot save pattern state to %s", path)
        else:
            self.telemetry.pattern_state_saves.labels("success").inc()

    @property
    def ports(self) -> dict[str, int]:
        return {
            "grpc": self.grpc.port if self.grpc else 0,
            "http": self.http.port if self.http else 0,
            "admin": self.admin.port if self.admin else 0,
        }


class Service(Protocol):
    """What `run` runs: a Proxy, a fleet Analyzer, or the supervisor of `--workers`."""

    @property
    def ports(self) -> dict[str, int]: ...

    async def start(self) -> None: ...

    async def shutdown(self, drain_seconds: float = 10.0) -> int | None:
        """Stop; returns how many acknowledged records were dropped, when the service holds any."""
        ...


def settle_heap() -> None:
    """Keep the garbage collector's pauses off the request path.

    Everything alive after start-up (modules, config, compiled policy) lives as long as the
    process, so `gc.freeze()` takes it out of every future collection; and since records live in
    protobuf's C structures, few Python objects are allocated per request, so young collections can
    be rarer. Measured under load: full collections went from 45-49 ms to 8-22 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


async def run_until_signalled(
    service: Service, stop_timeout: float = 10.0, *, worker: int | None = None
) -> int:
    """Run until SIGTERM or SIGINT, then stop gracefully; return how many acknowledged records were
    dropped at shutdown. A worker of `run --workers N` announces itself without ports: its parent
    announces the shared ports once every worker is up."""
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await service.start()
    settle_heap()
    if worker is None:
        log.info("lipservice-proxy ready", extra={"ports": service.ports})
    else:
        log.info("lipservice-proxy worker ready", extra={"worker": worker})
    await stop.wait()
    log.info("shutting down: stopping receivers, flushing queues")
    dropped = await service.shutdown(stop_timeout) or 0
    if dropped:
        log.error("stopped; %d acknowledged records were dropped at shutdown", dropped)
    else:
        log.info("stopped")
    return dropped
