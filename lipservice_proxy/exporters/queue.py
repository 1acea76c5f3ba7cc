"""The queue in front of one exporter: admission, re-batching, concurrent senders, drain.

Receivers answer the client once a payload is accepted here, so `check_room` is the backpressure
point: it refuses (raising `Backpressure`, counted) when the backlog's budget is spent, and the
client's own retry holds the data. The backlog is in memory, or on disk when `queue.directory` is
set (then `put` returns an awaitable that completes once the payload is durable, and the receiver
waits for it before answering).

`num_senders` tasks each pull the next batch when they are free: a full batch (`batch.max_records`
or `batch.max_bytes`) at once, a partial one once its oldest payload has waited `batch.timeout`.
While every sender is busy, payloads pile up and leave as bigger batches, so small requests are
re-batched exactly when that matters. A batch leaves the budget only when its send is over.

Every record accepted by a memory queue ends in one `lipservice_export_records_total` outcome:
sent, rejected (partial success), or failed (permanent error, retries exhausted, an exporter bug,
or still queued at the shutdown deadline). A disk queue keeps, instead of failing, whatever shutdown
interrupts; it is sent after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable

from ..config import QueueSettings, RetrySettings
from ..errors import Backpressure, ExportError
from ..telemetry import Telemetry
from .backlog import Backlog, Batch, MemoryBacklog
from .base import ExportResult, LogExporter
from .persistent import DiskBacklog
from .retry import HintBeyondBudget, call_with_retry

log = logging.getLogger(__name__)

IN_FLIGHT_GRACE = 1.0
"""Seconds past the shutdown deadline for a send already on the wire to resolve, so it is counted by
its outcome (upstream may well have it) rather than cancelled and counted as failed (or, from a disk
queue, sent again after the restart). Within the 5 s a `--workers` supervisor allows beyond the drain."""


def build_backlog(name: str, settings: QueueSettings, telemetry: Telemetry) -> Backlog:
    if settings.directory is not None:
        return DiskBacklog(name, settings, telemetry)
    return MemoryBacklog(name, settings.max_records, settings.max_bytes)


class ExportQueue:
    """Owns one exporter: accepts payloads, batches them and sends them with retry."""

    def __init__(
        self,
        exporter: LogExporter,
        settings: QueueSettings,
        retry: RetrySettings,
        telemetry: Telemetry,
    ) -> None:
        self.exporter = exporter
        self.name = exporter.name
        self._settings = settings
        self._retry = retry
        self._telemetry = telemetry
        self._backlog = build_backlog(self.name, settings, telemetry)
        self._waiting_since = 0.0  # monotonic time the oldest waiting payload arrived (about)
        self._changed = asyncio.Event()  # replaced on every notify: a broadcast to idle senders
        self._closing = False
        self._stop = asyncio.Event()  # interrupts retry backoff
        self._senders: list[asyncio.Task[None]] = []
        self._queue_records_gauge = telemetry.export_queue_records.labels(self.name)
        self._queue_bytes_gauge = telemetry.export_queue_bytes.labels(self.name)

    # ---- admission (called from receivers, synchronous) ----

    def check_room(self, records: int, nbytes: int) -> None:
        """Raise Backpressure (and count the refusal) unless a request of `records` records and `nbytes`
        bytes fits now; PayloadTooLarge when it never could.

        The check is made before the sampler runs, so a refused request leaves no trace; the payload
        then put holds at most `records` records.
        """
        if self._closing:
            raise Backpressure(f"exporter {self.name}: shutting down")
        try:
            self._backlog.check_room(records, nbytes)
        except Backpressure:
            self._telemetry.export_enqueue_refusals.labels(self.name).inc()
            raise

    def put(self, payload: bytes, records: int) -> Awaitable[None] | None:
        """Queue a payload admitted by `check_room`; await the result, when there is one, before
        answering the client (the payload is then on disk). Raises Backpressure if the disk fails."""
        if not self._backlog.waiting_records:
            self._waiting_since = time.monotonic()
        durable = self._backlog.append(payload, records)
        self._updated()
        return durable

    @property
    def queued_records(self) -> int:
        return self._backlog.records

    # ---- lifecycle ----

    async def start(self) -> None:
        await self._backlog.open()
        self._waiting_since = 0.0  # what a disk queue replays has waited long enough
        await self.exporter.start()
        self._senders = [
            asyncio.create_task(self._sender(), name=f"sender:{self.name}:{index}")
            for index in range(self._settings.num_senders)
        ]
        self._updated()

    async def shutdown(self, deadline: float) -> int:
        """Stop accepting; a memory queue sends what it holds until `deadline` (monotonic) and counts
        the rest as failed, a disk queue only lets sends in progress finish. A send on the wire at the
        deadline has IN_FLIGHT_GRACE more to resolve. Then close the exporter.
        Returns how many accepted records were dropped (a memory queue's leftovers; 0 for a disk queue)."""
        self._closing = True
        self._updated()
        if not self._backlog.durable:
            await self._wait_for_senders(deadline)
        self._stop.set()  # ends every backoff at once; a send on the wire gets IN_FLIGHT_GRACE to resolve
        self._updated()
        await self._wait_for_senders(max(deadline, time.monotonic()) + IN_FLIGHT_GRACE)
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        left = await self._backlog.close()
        dropped = 0 if self._backlog.durable else left
        if dropped:
            log.error(
                "exporter %s: shutdown deadline passed with %d acknowledged records unsent; counted as "
                "failed and lost. Set queue.directory (the disk queue) to keep them for the next start",
                self.name,
                dropped,
            )
            self._telemetry.export_records.labels(self.name, "failed").inc(dropped)
            self._telemetry.export_shutdown_dropped.labels(self.name).inc(dropped)
        self._updated()
        await self.exporter.shutdown()
        return dropped

    async def _wait_for_senders(self, deadline: float) -> None:
        running = [task for task in self._senders if not task.done()]
        if running:
            await asyncio.wait(running, timeout=max(0.0, deadline - time.monotonic()))

    # ---- internals ----

    def _updated(self) -> None:
        """The backlog or the state changed: refresh the gauges and wake the idle senders."""
        self._queue_records_gauge.set(self._backlog.records)
        self._queue_bytes_gauge.set(self._backlog.nbytes)
        self._changed.set()
        self._changed = asyncio.Event()

    def _stopped_taking(self) -> bool:
        return self._stop.is_set() or (self._closing and self._backlog.durable)

    async def _next_batch(self) -> Batch | None:
        """The next batch to send, once there is one worth sending; None when this sender should end."""
        limits = self._settings.batch
        backlog = self._backlog
        while not self._stopped_taking():
            changed = self._changed
            wait: float | None = None
            if backlog.waiting_records:
                full = (
                    backlog.waiting_records >= limits.max_records or backlog.waiting_bytes >= limits.max_bytes
                )
                wait = self._waiting_since + limits.timeout - time.monotonic()
                if full or self._closing or wait <= 0:
                    batch = backlog.take(limits.max_records, limits.max_bytes)
                    if batch is not None:
                        self._waiting_since = time.monotonic()
                        self._updated()
                        return batch
                    continue  # the backlog corrected its count: nothing was left to read
            elif self._closing:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=wait)
        return None

    async def _sender(self) -> None:
        while (batch := await self._next_batch()) is not None:
            if await self._send(batch):
                self._backlog.release(batch)
                self._updated()

    async def _send(self, batch: Batch) -> bool:
        """Send with retry and count the outcome. False when shutdown interrupted the retries: the batch
        then stays with the backlog."""
        payload = batch.join()
        telemetry, name = self._telemetry, self.name
        latency = telemetry.export_latency.labels(name)

        async def attempt() -> ExportResult:
            started = time.perf_counter()
            try:
                result = await self.exporter.export(payload, batch.records)
            except ExportError as exc:
                outcome = "retryable_error" if exc.retryable else "permanent_error"
                telemetry.export_requests.labels(name, outcome).inc()
                raise
            finally:
                latency.observe(time.perf_counter() - started)
            telemetry.export_requests.labels(name, "success").inc()
            return result

        def on_retry(exc: ExportError, delay: float) -> None:
            telemetry.export_retries.labels(name).inc()
            asked = " (as upstream asked)" if exc.retry_after is not None and delay <= exc.retry_after else ""
            log.warning(
                "exporter %s: retrying %d records in %.2fs%s: %s", name, batch.records, delay, asked, exc
            )

        try:
            result = await call_with_retry(
                attempt,
                self._retry,
                stop=self._stop,
                on_retry=on_retry,
                outlast_hints=self._backlog.durable,
                reconnected=self.exporter.reconnected,
            )
        except ExportError as exc:
            if exc.retryable:  # the retry loop was stopped by shutdown
                return False
            telemetry.export_records.labels(name, "failed").inc(batch.records)
            advice = (
                "; a disk queue (queue.directory) would keep them for that wait"
                if isinstance(exc, HintBeyondBudget)
                else ""
            )
            log.error("exporter %s: dropping %d records: %s%s", name, batch.records, exc, advice)
            return True
        except Exception:  # an exporter bug must not take this sender down with it
            telemetry.export_records.labels(name, "failed").inc(batch.records)
            log.exception("exporter %s: dropping %d records after an unexpected error", name, batch.records)
            return True
        rejected = min(result.rejected_records, batch.records)
        if rejected:
            telemetry.export_records.labels(name, "rejected").inc(rejected)
            log.warning(
                "exporter %s: upstream rejected %d of %d records: %s",
                name,
                rejected,
                batch.records,
                result.message,
            )
        telemetry.export_records.labels(name, "sent").inc(batch.records - rejected)
        return True


class Fanout:
    """Hands each accepted payload to every exporter queue: admitted by all, or by none."""

    def __init__(self, queues: list[ExportQueue]) -> None:
        self.queues = queues

    def check_room(self, records: int, nbytes: int) -> None:
        for queue in self.queues:
            queue.check_room(records, nbytes)

    async def put(self, payload: bytes, records: int) -> None:
        """Queue the payload everywhere, then wait until every disk queue has it durably. Every queue
        takes it before the first wait, so a request admitted by `check_room` reaches them all."""
        pending = [durable for queue in self.queues if (durable := queue.put(payload, records)) is not None]
        if pending:
            await asyncio.gather(*pending)
