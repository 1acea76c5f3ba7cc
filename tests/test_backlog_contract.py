"""The backlog contract, run against both backlogs: the memory one (exporters/backlog.py) and the disk
one (exporters/persistent/backlog.py).

Both hand out batches in order within the limits, count taken batches until they are released,
refuse with Backpressure when full (PayloadTooLarge for what could never fit), and at close report
what is left: lost in memory, kept on disk for the next start. Behind an export queue both retry a
failed send and deliver, count every refusal, and at shutdown with the upstream down a memory queue
drops and counts what it holds while a disk queue keeps it for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from lipservice_proxy.config import MIB, QueueSettings, RetrySettings
from lipservice_proxy.errors import Backpressure, PayloadTooLarge
from lipservice_proxy.exporters.backlog import Backlog, MemoryBacklog
from lipservice_proxy.exporters.persistent import DiskBacklog
from lipservice_proxy.exporters.queue import ExportQueue
from lipservice_proxy.telemetry import Telemetry
from tests.support.delivery import duplicates, grpc_exporter, logs_request, metric, outcome, seqs_of
from tests.support.sink import OtlpSink
from tests.support.waiting import async_wait_until

KINDS = ["memory", "disk"]
BUDGET = MIB  # the smallest disk budget (queue.max_disk_mib 1), and the memory queue's max_bytes
ENTRY = 16 * 1024
RETRY = RetrySettings(initial_interval=0.02, max_interval=0.1, max_elapsed=60)

Open = Callable[[], Awaitable[Backlog]]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_backlog(kind: str, tmp_path: Path) -> Open:
    """Opens a backlog of this kind; each call is a fresh start over the same directory."""

    async def opened() -> Backlog:
        backlog: Backlog
        if kind == "memory":
            backlog = MemoryBacklog("upstream", max_records=1_000_000, max_bytes=BUDGET)
        else:
            settings = QueueSettings(directory=tmp_path, max_disk_mib=BUDGET / MIB)
            backlog = DiskBacklog("upstream", settings, Telemetry())
        await backlog.open()
        return backlog

    return opened


def payload(index: int, size: int = ENTRY) -> bytes:
    return index.to_bytes(4, "big") * (size // 4)


async def append(backlog: Backlog, index: int, records: int = 1, size: int = ENTRY) -> None:
    backlog.check_room(records, size)
    durable = backlog.append(payload(index, size), records)
    if durable is not None:
        await durable


def indexes(payloads: list[bytes]) -> list[int]:
    return [int.from_bytes(p[:4], "big") for p in payloads]


def test_batches_come_out_in_order_within_the_limits(open_backlog: Open) -> None:
    async def scenario() -> None:
        backlog = await open_backlog()
        for index in range(10):
            await append(backlog, index, records=index + 1)
        assert backlog.take(max_records=1, max_bytes=BUDGET) is not None  # one payload, whatever its size
        batches = []
        while (batch := backlog.take(max_records=12, max_bytes=BUDGET)) is not None:
            batches.append(batch)
        assert [indexes(b.payloads) for b in batches] == [[1, 2, 3], [4, 5], [6], [7], [8], [9]]
        assert all(b.records <= 12 or len(b.payloads) == 1 for b in batches)
        assert [b.records for b in batches] == [2 + 3 + 4, 5 + 6, 7, 8, 9, 10]
        assert backlog.take(max_records=12, max_bytes=BUDGET) is None
        await backlog.close()

    asyncio.run(scenario())


def test_taken_batches_count_until_released(open_backlog: Open) -> None:
    async def scenario() -> None:
        backlog = await open_backlog()
        for index in range(4):
            await append(backlog, index, records=5)
        batch = backlog.take(max_records=10, max_bytes=BUDGET)
        assert batch is not None and batch.records == 10 and batch.nbytes == 2 * ENTRY
        assert (backlog.records, backlog.nbytes) == (20, 4 * ENTRY)
        assert (backlog.waiting_records, backlog.waiting_bytes) == (10, 2 * ENTRY)
        backlog.release(batch)
        assert (backlog.records, backlog.nbytes) == (10, 2 * ENTRY)
        assert await backlog.close() == 10

    asyncio.run(scenario())


def test_a_full_backlog_refuses_until_released_and_what_never_fits_is_refused_for_good(
    open_backlog: Open,
) -> None:
    async def scenario() -> None:
        backlog = await open_backlog()
        with pytest.raises(PayloadTooLarge, match="never fit"):
            backlog.check_room(1, BUDGET + 1)  # empty, and still refused
        accepted = 0
        with pytest.raises(Backpressure, match="full"):
            for index in range(BUDGET // ENTRY + 1):
                await append(backlog, index)
                accepted += 1
        assert BUDGET // ENTRY - 2 <= accepted <= BUDGET // ENTRY
        while (batch := backlog.take(max_records=8, max_bytes=BUDGET)) is not None:
            backlog.release(batch)
        assert backlog.records == 0
        await append(backlog, accepted)  # room again
        await backlog.close()

    asyncio.run(scenario())


def test_close_reports_what_is_left_and_only_a_durable_backlog_keeps_it(
    kind: str, open_backlog: Open
) -> None:
    async def scenario() -> None:
        backlog = await open_backlog()
        for index in range(6):
            await append(backlog, index, records=2)
        sent = backlog.take(max_records=2, max_bytes=BUDGET)
        interrupted = backlog.take(max_records=2, max_bytes=BUDGET)  # shutdown cuts its send short
        assert sent is not None and interrupted is not None
        backlog.release(sent)
        assert await backlog.close() == 10  # the interrupted batch and the 4 waiting entries
        assert backlog.durable is (kind == "disk")

        again = await open_backlog()
        replayed = []
        while (batch := again.take(max_records=100, max_bytes=BUDGET)) is not None:
            replayed += indexes(batch.payloads)
            again.release(batch)
        assert replayed == ([1, 2, 3, 4, 5] if kind == "disk" else [])  # released batches stay sent
        assert await again.close() == 0

    asyncio.run(scenario())


# ---- behind an export queue, against a real OTLP sink ----


def export_queue(
    kind: str, sink: OtlpSink, directory: Path, telemetry: Telemetry, **settings: Any
) -> ExportQueue:
    where = {"directory": directory} if kind == "disk" else {}
    config = QueueSettings.model_validate({"batch": {"timeout": "10ms"}, **where, **settings})
    return ExportQueue(grpc_exporter(sink), config, RETRY, telemetry)


async def put(queue: ExportQueue, first: int, count: int) -> None:
    request = logs_request(range(first, first + count)).SerializeToString()
    queue.check_room(count, len(request))
    durable = queue.put(request, count)
    if durable is not None:
        await durable


def test_a_retryable_failure_is_retried_then_delivered(kind: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink:
            queue = export_queue(kind, sink, tmp_path, telemetry)
            await queue.start()
            sink.fail_grpc(grpc.StatusCode.UNAVAILABLE, times=2, retry_after=0.05)
            await put(queue, 0, 10)
            assert sorted(seqs_of(await sink.wait_for_records(10))) == list(range(10))
            await async_wait_until(lambda: queue.queued_records == 0, 10, what="the batch released")
            await queue.shutdown(time.monotonic() + 5)
            assert metric(telemetry, "lipservice_export_retries_total", exporter="upstream") == 2
            assert sink.attempts("grpc") == 3
            assert (
                metric(telemetry, "lipservice_export_requests_total", exporter="upstream", outcome="success")
                == 1
            )

    asyncio.run(scenario())


def test_every_refusal_is_counted(kind: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink:
            await sink.stop()  # nothing drains
            queue = export_queue(kind, sink, tmp_path, telemetry, max_bytes=BUDGET, max_disk_mib=1)
            await queue.start()
            request = logs_request(range(10)).SerializeToString()
            refused = 0
            for _ in range(2 * BUDGET // len(request)):
                try:
                    queue.check_room(10, len(request))
                except Backpressure:
                    refused += 1
                    continue
                durable = queue.put(request, 10)
                if durable is not None:
                    await durable
            assert refused > 0
            assert (
                metric(telemetry, "lipservice_export_enqueue_refusals_total", exporter="upstream") == refused
            )
            await queue.shutdown(time.monotonic() + 0.2)

    asyncio.run(scenario())


def test_at_shutdown_with_the_upstream_down_memory_drops_and_counts_while_disk_keeps(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with OtlpSink() as sink:
            await sink.stop()  # the upstream is down
            before = Telemetry()
            queue = export_queue(kind, sink, tmp_path, before, batch={"max_records": 10, "timeout": "10ms"})
            await queue.start()
            for index in range(30):
                await put(queue, index * 10, 10)
            await async_wait_until(
                lambda: metric(before, "lipservice_export_retries_total", exporter="upstream") >= 4,
                10,
                what="the senders to be retrying",
            )
            dropped = await queue.shutdown(time.monotonic() + 0.2)
            assert outcome(before, "upstream", "sent") == 0
            kept = metric(before, "lipservice_export_queue_records", exporter="upstream")
            assert kept == (300 if kind == "disk" else 0)
            if kind == "memory":
                assert dropped == outcome(before, "upstream", "failed") == 300
                assert (
                    metric(before, "lipservice_export_shutdown_dropped_records_total", exporter="upstream")
                    == 300
                )
                return
            assert dropped == outcome(before, "upstream", "failed") == 0  # batches in retry stay on disk

            await sink.start()
            after = Telemetry()
            queue = export_queue(kind, sink, tmp_path, after)
            await queue.start()
            assert metric(after, "lipservice_export_segments_replayed_total", exporter="upstream") >= 1
            received = seqs_of(await sink.wait_for_records(300))
            await async_wait_until(lambda: queue.queued_records == 0, 10, what="every entry acknowledged")
            await queue.shutdown(time.monotonic() + 5)
            assert set(received) == set(range(300))
            print(f"outage + restart: 300 put, {len(received)} arrived, {duplicates(received)} duplicates")

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    if kind == "memory":
        assert (
            "shutdown deadline passed with 300 acknowledged records unsent; counted as failed" in caplog.text
        )
