"""The disk-backed export queue against a real OTLP sink: damaged segments cost only the damaged
entries (counted), a full disk budget or a failing disk refuses with backpressure, and permanently
failed batches are not replayed. What survives an outage and a restart is in test_backlog_contract.py,
beside the memory queue's drop at the deadline."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from lipservice_proxy.config import QueueSettings, RetrySettings
from lipservice_proxy.errors import Backpressure
from lipservice_proxy.exporters.persistent import frames, queue_directory
from lipservice_proxy.exporters.queue import ExportQueue
from lipservice_proxy.telemetry import Telemetry
from tests.support.delivery import (
    file_size_limit,
    grpc_exporter,
    logs_request,
    metric,
    outcome,
    seqs_of,
)
from tests.support.sink import OtlpSink
from tests.support.waiting import async_wait_until

RETRY = RetrySettings(initial_interval=0.02, max_interval=0.1, max_elapsed=60)


def disk_queue(sink: OtlpSink, directory: Path, telemetry: Telemetry, **settings: Any) -> ExportQueue:
    config = QueueSettings.model_validate({"directory": directory, "batch": {"timeout": "10ms"}, **settings})
    return ExportQueue(grpc_exporter(sink), config, RETRY, telemetry)


async def put(queue: ExportQueue, first: int, count: int) -> None:
    """Admit and queue `count` records as one entry; return once the entry is on disk."""
    payload = logs_request(range(first, first + count)).SerializeToString()
    queue.check_room(count, len(payload))
    durable = queue.put(payload, count)
    if durable is not None:
        await durable


def segments(directory: Path) -> list[Path]:
    return sorted(queue_directory(directory, "upstream").glob("*.seg"))


def test_damaged_entries_are_skipped_with_a_count_and_the_rest_delivered(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with OtlpSink() as sink:
            await sink.stop()
            writer = disk_queue(sink, tmp_path, Telemetry(), max_disk_mib=1)  # 64 KiB segments
            await writer.start()
            for index in range(100):  # 100 entries of 10 records, about 4 KB each: several segments
                await put(writer, index * 10, 10)
            await writer.shutdown(time.monotonic() + 5)
            found = segments(tmp_path)
            first, *_, last = found
            data = bytearray(first.read_bytes())
            data[frames.HEADER_SIZE + 100] ^= 0x5A  # a flipped byte in the first entry (seqs 0-9)
            first.write_bytes(bytes(data))
            with last.open("r+b") as handle:  # a torn tail: the last entry (seqs 990-999) cut short
                handle.truncate(last.stat().st_size - 100)

            await sink.start()
            telemetry = Telemetry()
            reader = disk_queue(sink, tmp_path, telemetry, max_disk_mib=1)
            await reader.start()
            await sink.wait_for_records(980)
            await async_wait_until(lambda: reader.queued_records == 0, 10, what="every entry acknowledged")
            await reader.shutdown(time.monotonic() + 5)
            assert sorted(set(seqs_of(sink.log_records()))) == list(range(10, 990))
            assert metric(telemetry, "lipservice_export_corrupt_entries_total", exporter="upstream") == 2
            assert metric(telemetry, "lipservice_export_segments_replayed_total", exporter="upstream") == len(
                found
            )

    asyncio.run(scenario())


def test_a_full_disk_budget_refuses_until_upstream_acknowledges(tmp_path: Path) -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink:
            await sink.stop()
            queue = disk_queue(sink, tmp_path, telemetry, max_disk_mib=1)
            await queue.start()
            accepted = 0
            with pytest.raises(Backpressure, match="disk queue full"):
                for _ in range(1000):  # about 4 KB each: the 1 MiB budget is spent well before
                    await put(queue, accepted, 10)
                    accepted += 10
            assert metric(telemetry, "lipservice_export_enqueue_refusals_total", exporter="upstream") == 1
            used = metric(telemetry, "lipservice_export_disk_queue_bytes", exporter="upstream")
            assert 1024 * 1024 - 5000 < used <= 1024 * 1024
            await sink.start()
            await sink.wait_for_records(accepted, timeout=20)
            await async_wait_until(lambda: queue.queued_records == 0, 10, what="every entry acknowledged")
            await put(queue, accepted, 10)  # room again: acknowledged segments were deleted
            await queue.shutdown(time.monotonic() + 5)
            assert set(seqs_of(sink.log_records())) >= set(range(accepted))

    asyncio.run(scenario())


def test_a_failing_disk_refuses_the_request_and_loses_nothing_accepted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with OtlpSink() as sink:
            await sink.stop()
            queue = disk_queue(sink, tmp_path, Telemetry())
            await queue.start()
            await put(queue, 0, 10)
            (segment,) = segments(tmp_path)
            with (
                file_size_limit(segment.stat().st_size + 10),
                pytest.raises(Backpressure, match="write failed"),
            ):
                await put(queue, 10, 10)
            await put(queue, 20, 10)  # the disk works again: a new segment
            await sink.start()
            received = seqs_of(await sink.wait_for_records(20))
            await queue.shutdown(time.monotonic() + 5)
            assert sorted(received) == list(range(10)) + list(range(20, 30))

    asyncio.run(scenario())


def test_fsync_per_batch_answers_after_the_sync_and_interval_mode_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with OtlpSink() as sink:
            batch = disk_queue(sink, tmp_path / "batch", Telemetry())
            interval = disk_queue(
                sink, tmp_path / "interval", Telemetry(), fsync="interval", fsync_interval="50ms"
            )
            for queue in (batch, interval):
                await queue.start()
            payload = logs_request(range(5)).SerializeToString()
            durable = batch.put(payload, 5)
            assert durable is not None and not durable.done()  # type: ignore[attr-defined]
            await durable
            assert interval.put(payload, 5) is None
            await sink.wait_for_records(10)
            for queue in (batch, interval):
                await queue.shutdown(time.monotonic() + 5)

    asyncio.run(scenario())


def test_permanently_failed_batches_are_not_replayed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with OtlpSink() as sink:
            sink.fail_grpc(grpc.StatusCode.PERMISSION_DENIED)
            telemetry = Telemetry()
            queue = disk_queue(sink, tmp_path, telemetry)
            await queue.start()
            await put(queue, 0, 10)
            await async_wait_until(
                lambda: outcome(telemetry, "upstream", "failed") == 10, 10, what="the drop"
            )
            await queue.shutdown(time.monotonic() + 5)
            sink.clear_faults()
            again = disk_queue(sink, tmp_path, Telemetry())
            await again.start()
            assert again.queued_records == 0
            await again.shutdown(time.monotonic() + 5)
            assert sink.attempts("grpc") == 1

    asyncio.run(scenario())
