"""The disk backlog: the segment log behind an exporter queue, with fsync off the event loop.

`append` writes the entry at once (a write to the page cache, microseconds) and, with
`fsync: batch`, returns a future that completes after the next fsync: the receiver answers its
client only then. One flusher task runs the fsyncs in a worker thread, so every append that arrived
while one fsync ran shares the next (group commit). With `fsync: interval` the flusher syncs every
`fsync_interval` and `append` returns at once: a crash of the machine (not of the process) can then
lose up to one interval of acknowledged data.

Batches are read back from the log in order; several are in flight at once and finish in any order.
What the log is told is acknowledged, at every release (sent, rejected, or given up for good): the
start of the oldest batch still in flight, and the spans of finished batches after it, so that a
restart sends again only the batches that were in flight (the Collector's persistent queue likewise
tracks each dispatched item). A batch interrupted by shutdown is never released: it is sent again
after the restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ...config import MIB, QueueSettings
from ...errors import Backpressure, PayloadTooLarge
from ...telemetry import Telemetry
from ..backlog import Batch
from . import frames
from .segments import Position, ReadEntry, SegmentLog, Span

log = logging.getLogger(__name__)

MIN_SEGMENT_BYTES = 64 * 1024
MAX_SEGMENT_BYTES = 32 * MIB


def segment_bytes_for(max_disk_bytes: int) -> int:
    """Segments of 1/16 of the budget (64 KiB to 32 MiB): an acknowledged segment is deleted only once
    it is full, so the part of the budget that cannot be freed stays small."""
    return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_disk_bytes // 16))


def queue_directory(root: Path, exporter_name: str) -> Path:
    """Each exporter's own directory under `queue.directory` (names such as otlp_grpc/1 made safe)."""
    return root / re.sub(r"[^A-Za-z0-9_.-]", "_", exporter_name)


@dataclass(slots=True, eq=False)
class InFlight:
    """Batches taken one after another: where the first starts, where the last ends, and whether their
    sends are over. Finished neighbours are joined, so the list stays about twice the senders long."""

    start: Position
    end: Position
    done: bool = False


class DiskBacklog:
    durable = True

    def __init__(self, name: str, settings: QueueSettings, telemetry: Telemetry) -> None:
        assert settings.directory is not None
        self._name = name
        self._max_disk_bytes = int(settings.max_disk_mib * MIB)
        self._log = SegmentLog(
            queue_directory(settings.directory, name), segment_bytes_for(self._max_disk_bytes), self._damaged
        )
        self._fsync_interval = settings.fsync_interval if settings.fsync == "interval" else None
        self._telemetry = telemetry
        self._disk_gauge = telemetry.export_disk_queue_bytes.labels(name)
        self._unread_records = self._unread_bytes = 0
        self._peeked: ReadEntry | None = None  # read from the log but not yet in a batch
        self._in_flight: list[InFlight] = []  # in log order
        self._batches: dict[Batch, InFlight] = {}
        self._in_flight_records = self._in_flight_bytes = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._written = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    # ---- sizes ----

    @property
    def records(self) -> int:
        return self._unread_records + self._in_flight_records

    @property
    def nbytes(self) -> int:
        return self._unread_bytes + self._in_flight_bytes

    @property
    def waiting_records(self) -> int:
        return self._unread_records

    @property
    def waiting_bytes(self) -> int:
        return self._unread_bytes

    # ---- lifecycle ----

    async def open(self) -> None:
        report = await asyncio.to_thread(self._log.open)
        for description in report.damage:
            self._damaged(description)
        self._unread_records, self._unread_bytes = report.records, report.payload_bytes
        if report.segments:
            self._telemetry.export_segments_replayed.labels(self._name).inc(report.segments)
            log.info(
                "exporter %s: replaying %d records from %d segments left in %s",
                self._name,
                report.records,
                report.segments,
                self._log.directory,
            )
        self._disk_gauge.set(self._log.disk_bytes)
        self._flusher = asyncio.create_task(self._flush_forever(), name=f"disk-flusher:{self._name}")

    async def close(self) -> int:
        """Sync and close the files; whatever was not acknowledged stays on disk for the next start."""
        if self._flusher is not None:
            async with self._sync_lock:  # never cancel the flusher in the middle of an fsync
                self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        async with self._sync_lock:
            await self._sync()
        self._log.close()
        if self.records:
            log.info(
                "exporter %s: %d records stay in the disk queue for the next start",
                self._name,
                self.records,
            )
        return self.records

    # ---- admission ----

    def check_room(self, records: int, nbytes: int) -> None:
        """The disk budget bounds bytes only. An empty queue takes any payload that fits the budget (the
        newest segment may hold acknowledged bytes that are deleted only when it is full)."""
        used = self._log.disk_bytes
        if frames.HEADER_SIZE + nbytes > self._max_disk_bytes:
            raise PayloadTooLarge(
                f"a request of {nbytes} bytes can never fit the disk queue of exporter {self._name} "
                f"(queue.max_disk_mib {self._max_disk_bytes / MIB:g}); send smaller requests"
            )
        if self.records and used + frames.HEADER_SIZE + nbytes > self._max_disk_bytes:
            raise Backpressure(
                f"exporter {self._name}: disk queue full ({used} of {self._max_disk_bytes} bytes used)"
            )

    def append(self, payload: bytes, records: int) -> asyncio.Future[None] | None:
        try:
            self._log.append(frames.encode(payload, records))
        except OSError as exc:
            log.error(
                "exporter %s: cannot write to the disk queue in %s: %s",
                self._name,
                self._log.directory,
                exc,
            )
            raise Backpressure(f"exporter {self._name}: disk queue write failed ({exc.strerror})") from None
        self._unread_records += records
        self._unread_bytes += len(payload)
        self._disk_gauge.set(self._log.disk_bytes)
        if self._fsync_interval is not None:
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._written.set()
        return waiter

    # ---- batches ----

    def take(self, max_records: int, max_bytes: int) -> Batch | None:
        start = self._unread_start()
        payloads: list[bytes] = []
        records = nbytes = 0
        end = start
        caught_up = False
        while True:
            entry = self._peeked or self._log.read_next()
            self._peeked = None
            if entry is None:
                caught_up = True
                break
            over = records + entry.records > max_records or nbytes + len(entry.payload) > max_bytes
            if payloads and over:
                self._peeked = entry
                break
            payloads.append(entry.payload)
            records += entry.records
            nbytes += len(entry.payload)
            end = entry.end
        self._unread_records -= records
        self._unread_bytes -= nbytes
        if caught_up:
            # Everything written has been read. Damage met in this run's data held records that were
            # counted at append and can never be read; forget them rather than wait for them.
            self._unread_records = self._unread_bytes = 0
        if not payloads:
            return None
        batch = Batch(payloads, records, nbytes)
        flight = InFlight(start, end)
        self._in_flight.append(flight)
        self._batches[batch] = flight
        self._in_flight_records += records
        self._in_flight_bytes += nbytes
        return batch

    def release(self, batch: Batch) -> None:
        flight = self._batches.pop(batch)
        flight.done = True
        self._in_flight_records -= batch.records
        self._in_flight_bytes -= batch.nbytes
        flights = self._in_flight
        index = flights.index(flight)
        if index + 1 < len(flights) and flights[index + 1].done:  # join the finished neighbours
            flight.end = flights.pop(index + 1).end
        if index > 0 and flights[index - 1].done:
            flights[index - 1].end = flights.pop(index).end
        if flights and flights[0].done:
            flights.pop(0)
        cursor = flights[0].start if flights else self._unread_start()
        finished: list[Span] = [(done.start, done.end) for done in flights if done.done]
        self._log.acknowledge(cursor, finished)
        self._disk_gauge.set(self._log.disk_bytes)

    def _unread_start(self) -> Position:
        return self._peeked.start if self._peeked is not None else self._log.read_position

    # ---- fsync ----

    async def _flush_forever(self) -> None:
        while True:
            if self._fsync_interval is None:
                await self._written.wait()
                self._written.clear()
            else:
                await asyncio.sleep(self._fsync_interval)
            async with self._sync_lock:
                await self._sync()

    async def _sync(self) -> None:
        waiters, self._waiters = self._waiters, []
        work = self._log.take_sync_work()
        try:
            if work.fds or work.close_after or work.directory is not None:
                await asyncio.to_thread(work.run)
        except Exception as exc:  # OSError, or a worker thread that cannot run: never leave clients waiting
            log.error("exporter %s: fsync of the disk queue failed: %s", self._name, exc)
            failure = Backpressure(f"exporter {self._name}: disk queue fsync failed ({exc})")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(failure)
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _damaged(self, description: str) -> None:
        self._telemetry.export_corrupt_entries.labels(self._name).inc()
        log.warning("exporter %s: disk queue: skipped damaged data in %s", self._name, description)
