"""A sampler's link to the analyzer: reports its windows, and applies the policy stream.

The window (`reports.ReportWindow`) is the pipeline's observer; every `fleet.report_interval`, and
once more when the sampler stops, it is closed and sent. Sending never touches the hot path. A
report that cannot be delivered (the analyzer is down, or the channel is in reconnect backoff) is
kept, up to MAX_PENDING_REPORTS reports and MAX_PENDING_BYTES, and sent again, oldest first, before
the next one; past those bounds the oldest is dropped and counted
(`lipservice_fleet_reports_sent_total{outcome="failed"}`) with a log line.

The policy stream is one more source of the `PolicyStore` (`offer`): highest version wins against
the local files, and the last snapshot received stays in force while the analyzer is unreachable.
Boosts in a snapshot are added to the sampler's boost table. A closed or failed stream is reopened
after a jittered backoff (`fleet.reconnect_interval` doubling up to `fleet.max_reconnect_interval`,
reset once a snapshot arrives; the jitter never takes a wait past the maximum); gRPC's own
reconnection uses the same bounds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from ..auth import BearerAuthenticator
from ..config import MIB, FleetConfig, RetrySettings
from ..errors import ConfigError, PolicyError
from ..exporters.retry import Backoff
from ..pattern_view import Resolve, boost_rows, pattern_row
from ..sampling.boosts import BoostTable
from ..sampling.store import PolicyStore
from ..telemetry import Telemetry
from . import policy_pb2 as pb
from .reports import ReportWindow
from .server import REPORT_METHOD, WATCH_METHOD
from .wire import read_snapshot, report_message

log = logging.getLogger(__name__)


MAX_REPORT_TIMEOUT = 10.0
# Undelivered reports kept for resending: a few minutes of windows at the default report interval,
# and never more than this many bytes of serialized reports.
MAX_PENDING_REPORTS = 30
MAX_PENDING_BYTES = 32 * MIB
# How long start() waits for the analyzer's first snapshot, so that the first records are sampled by
# the fleet's policy; an analyzer that is down costs this much start-up time, then the local one applies.
FIRST_SNAPSHOT_WAIT = 2.0


def default_sampler_id() -> str:
    """The host name: on Kubernetes the pod's name, which tells samplers apart."""
    return socket.gethostname() or f"pid-{os.getpid()}"


def reconnect_delay(backoff: Backoff, maximum: float) -> float:
    """The backoff's next wait, its jitter capped at `maximum` (fleet.max_reconnect_interval)."""
    return min(backoff.next_delay(), maximum)


class FleetClient:
    def __init__(
        self,
        settings: FleetConfig,
        *,
        store: PolicyStore,
        boosts: BoostTable,
        telemetry: Telemetry,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.analyzer is None:
            raise ConfigError("fleet.analyzer: a sampler needs the analyzer's host:port")
        self._settings = settings
        self.analyzer = settings.analyzer
        self.sampler_id = settings.sampler_id or default_sampler_id()
        self._store = store
        self._boosts = boosts
        self._telemetry = telemetry
        self._clock = clock
        auth = BearerAuthenticator.from_config(settings.auth, environ)
        self._metadata = (("authorization", auth.header),) if auth is not None else ()
        self._reconnect = RetrySettings(
            initial_interval=settings.reconnect_interval,
            max_interval=settings.max_reconnect_interval,
            multiplier=2.0,
        )
        self._message_bytes = int(settings.max_message_mib * MIB)
        self.window = ReportWindow(settings.max_patterns_per_report, clock())
        self._sequence = 0
        self._pending: deque[tuple[pb.ReportPatternsRequest, int, int]] = deque()  # report, records, bytes
        self._pending_bytes = 0
        self._channel: grpc.aio.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False
        self._first_snapshot = asyncio.Event()
        self.revision = 0
        self.last_error = ""

    # ---- lifecycle ----

    async def start(self) -> None:
        """Open the channel and the policy stream; wait (briefly) for the first snapshot."""
        interval_ms = int(self._settings.reconnect_interval * 1000)
        self._channel = grpc.aio.insecure_channel(
            self.analyzer,
            options=[
                ("grpc.max_receive_message_length", self._message_bytes),
                ("grpc.max_send_message_length", self._message_bytes),
                ("grpc.initial_reconnect_backoff_ms", interval_ms),
                ("grpc.min_reconnect_backoff_ms", interval_ms),
                ("grpc.max_reconnect_backoff_ms", int(self._settings.max_reconnect_interval * 1000)),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        self._report_call = self._channel.unary_unary(
            REPORT_METHOD,
            request_serializer=pb.ReportPatternsRequest.SerializeToString,
            response_deserializer=pb.ReportPatternsResponse.FromString,
        )
        self._watch_call = self._channel.unary_stream(
            WATCH_METHOD,
            request_serializer=pb.WatchPolicyRequest.SerializeToString,
            response_deserializer=pb.PolicySnapshot.FromString,
        )
        self._tasks.append(asyncio.create_task(self._watch(), name="fleet-watch"))
        try:
            await asyncio.wait_for(self._first_snapshot.wait(), FIRST_SNAPSHOT_WAIT)
        except TimeoutError:
            log.warning(
                "no policy from the analyzer at %s within %gs (%s); starting with policy version %d",
                self.analyzer,
                FIRST_SNAPSHOT_WAIT,
                self.last_error or "no answer",
                self._store.current.version,
            )

    def announce(self) -> None:
        """Report at once (the window so far, usually empty) and then every interval: the analyzer
        learns of this sampler as soon as it can take traffic."""
        self._tasks.append(asyncio.create_task(self._report_periodically(), name="fleet-reports"))

    async def stop(self, report_seconds: float) -> None:
        """Send the last window (given `report_seconds` at most), then close the stream and the channel."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._channel is not None:
            await self._report(max(0.1, report_seconds))
            await self._channel.close()
            self._channel = None
        if self._pending:  # the process is ending: what is still undelivered is lost, and counted
            self._telemetry.fleet_reports_sent.labels("failed").inc(len(self._pending))
            log.warning(
                "%d pattern reports (%d records) not delivered to the analyzer at %s before stopping",
                len(self._pending),
                sum(records for _, records, _ in self._pending),
                self.analyzer,
            )
            self._pending.clear()
            self._pending_bytes = 0
        self._set_connected(False)

    # ---- reports ----

    async def _report_periodically(self) -> None:
        interval = self._settings.report_interval
        while True:
            try:
                await self._report(min(interval, MAX_REPORT_TIMEOUT))
            except Exception:  # the next window must still go out
                self._telemetry.fleet_reports_sent.labels("failed").inc()
                log.exception("pattern report failed unexpectedly")
            await asyncio.sleep(interval)

    async def _report(self, call_seconds: float) -> None:
        """Close the window and send it, after any reports still pending (oldest first); what cannot
        be delivered now stays pending for the next call."""
        window = self.window.take(self._clock())
        request = report_message(
            window,
            sampler_id=self.sampler_id,
            sequence=self._sequence,
            policy_version=self._store.current.version,
            max_bytes=self._message_bytes // 2,
        )
        self._sequence += 1
        self._keep_pending(request, window.records)
        deadline = time.monotonic() + call_seconds
        while self._pending:
            pending, records, size = self._pending[0]
            try:
                await self._report_call(
                    pending,
                    timeout=max(0.1, deadline - time.monotonic()),
                    metadata=self._metadata,
                    wait_for_ready=False,
                )
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "pattern report %d (%d records) not delivered, %d pending for resending: "
                    "the analyzer at %s answered %s: %s",
                    pending.sequence,
                    records,
                    len(self._pending),
                    self.analyzer,
                    exc.code().name,
                    exc.details(),
                )
                return
            self._pending.popleft()
            self._pending_bytes -= size
            self._telemetry.fleet_reports_sent.labels("success").inc()

    def _keep_pending(self, request: pb.ReportPatternsRequest, records: int) -> None:
        size = request.ByteSize()
        self._pending.append((request, records, size))
        self._pending_bytes += size
        while len(self._pending) > MAX_PENDING_REPORTS or (
            self._pending_bytes > MAX_PENDING_BYTES and len(self._pending) > 1
        ):
            dropped, dropped_records, dropped_size = self._pending.popleft()
            self._pending_bytes -= dropped_size
            self._telemetry.fleet_reports_sent.labels("failed").inc()
            log.warning(
                "pattern report %d (%d records) dropped: %d reports are waiting for the analyzer at %s",
                dropped.sequence,
                dropped_records,
                MAX_PENDING_REPORTS,
                self.analyzer,
            )

    # ---- the policy stream ----

    async def _watch(self) -> None:
        backoff = Backoff(self._reconnect)
        while True:
            call = self._watch_call(
                pb.WatchPolicyRequest(sampler_id=self.sampler_id, known_version=self._store.current.version),
                metadata=self._metadata,
                wait_for_ready=False,
            )
            try:
                async for snapshot in call:
                    if not self.connected:
                        self._set_connected(True)
                        backoff = Backoff(self._reconnect)
                        log.info("policy stream from the analyzer at %s open", self.analyzer)
                    self._apply(snapshot)
                self.last_error = "the analyzer closed the stream"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:  # a stream that dies silently would freeze the policy for good
                log.exception("policy stream failed unexpectedly; reconnecting")
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                call.cancel()
            delay = reconnect_delay(backoff, self._settings.max_reconnect_interval)
            if self.connected:
                self._set_connected(False)
                log.warning(
                    "policy stream from the analyzer at %s lost (%s); keeping policy version %d, "
                    "reconnecting",
                    self.analyzer,
                    self.last_error,
                    self._store.current.version,
                )
            await asyncio.sleep(delay)

    def _apply(self, snapshot: pb.PolicySnapshot) -> None:
        origin = f"analyzer {self.analyzer}"
        try:
            policy, boosts = read_snapshot(snapshot, origin, self._clock())
        except PolicyError as exc:
            self._telemetry.policy_reloads.labels("error").inc()
            log.error("policy from the analyzer refused, keeping the one in force: %s", exc)
            return
        self._store.offer(policy, origin)
        for boost in boosts:
            self._boosts.boost(boost.pattern_id, boost.rate, boost.until, boost.reason)
        self.revision = snapshot.revision
        self._first_snapshot.set()

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._telemetry.fleet_connected.set(1 if connected else 0)

    # ---- the admin API ----

    def status(self) -> dict[str, Any]:
        return {
            "role": "sampler",
            "sampler_id": self.sampler_id,
            "analyzer": self.analyzer,
            "connected": self.connected,
            "revision": self.revision,
            "reports_sent": self._sequence,
            "reports_pending": len(self._pending),
            "last_error": self.last_error or None,
        }

    def patterns_view(self, limit: int, resolve: Resolve) -> dict[str, Any]:
        """This sampler's open window, with the rate and rule `resolve` gives each pattern's busiest
        sampled level; the fleet's statistics are on the analyzer."""
        boosts = {boost.pattern_id: boost for boost in self._boosts.active(self._clock())}
        patterns = [
            pattern_row(
                service,
                pattern_id,
                entry.template,
                entry.received,
                sum(entry.kept),
                resolve=resolve,
                boost=boosts.get(pattern_id),
            )
            for (service, pattern_id), entry in self.window.busiest(limit)
        ]
        return {
            "patterns": patterns,
            "total_patterns": len(self.window),
            "boosts": boost_rows(boosts.values()),
            "fleet": self.status(),
        }
