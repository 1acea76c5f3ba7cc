"""The memory export queue against a real OTLP sink: re-batching, backpressure, retry outcomes,
accounting and shutdown (what both queues share, a retried send and the shutdown deadline among it, is
in test_backlog_contract.py). Every record put ends as sent, rejected or failed, and the counters say
so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from lipservice_proxy.config import QueueSettings, RetrySettings
from lipservice_proxy.errors import Backpressure, PayloadTooLarge
from lipservice_proxy.exporters.base import ExportResult, LogExporter
from lipservice_proxy.exporters.otlp_grpc import OtlpGrpcExporter
from lipservice_proxy.exporters.queue import ExportQueue, Fanout
from lipservice_proxy.telemetry import Telemetry
from tests.support.delivery import grpc_exporter, logs_request, metric, outcome, seqs_of
from tests.support.sink import OtlpSink
from tests.support.waiting import async_wait_until

FAST_RETRY = RetrySettings(initial_interval=0.02, max_interval=0.1, max_elapsed=20)


def queue_settings(**overrides: Any) -> QueueSettings:
    return QueueSettings.model_validate({"batch": {"timeout": "20ms"}, **overrides})


@contextlib.asynccontextmanager
async def export_queue(
    exporter: LogExporter, telemetry: Telemetry, retry: RetrySettings = FAST_RETRY, **settings: Any
) -> AsyncIterator[ExportQueue]:
    queue = ExportQueue(exporter, queue_settings(**settings), retry, telemetry)
    await queue.start()
    try:
        yield queue
    finally:
        await queue.shutdown(time.monotonic() + 5)


def put(queue: ExportQueue, first: int, count: int) -> None:
    queue.check_room(count, 0)
    assert queue.put(logs_request(range(first, first + count)).SerializeToString(), count) is None


def test_small_requests_leave_as_full_batches() -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink:
            queue = ExportQueue(
                grpc_exporter(sink), queue_settings(batch={"max_records": 100}), FAST_RETRY, telemetry
            )
            for index in range(200):  # 200 requests of 5 records, queued before any sender runs
                put(queue, index * 5, 5)
            await queue.start()
            await sink.wait_for_records(1000)
            await queue.shutdown(time.monotonic() + 5)
            requests = sink.requests("logs")
            assert [len(r.message.resource_logs) for r in requests] == [20] * 10  # type: ignore[attr-defined]
            assert sorted(seqs_of(sink.log_records())) == list(range(1000))
            assert outcome(telemetry, "upstream", "sent") == 1000

    asyncio.run(scenario())


def test_a_partial_batch_leaves_after_the_timeout_and_batches_stay_under_max_bytes() -> None:
    sizes = [len(logs_request(range(100 + n * 20, 120 + n * 20)).SerializeToString()) for n in range(10)]
    max_bytes = 2 * max(sizes) + 1
    assert max_bytes < 3 * min(sizes)

    async def scenario() -> None:
        limits = {"max_bytes": max_bytes, "timeout": "50ms"}
        async with OtlpSink() as sink, export_queue(grpc_exporter(sink), Telemetry(), batch=limits) as queue:
            put(queue, 0, 3)
            assert len(await sink.wait_for_records(3)) == 3  # far below max_records: sent on the timeout
            for index in range(10):
                put(queue, 100 + index * 20, 20)  # two fit in max_bytes, three do not
            await sink.wait_for_records(203)
            later = sink.requests("logs")[1:]
            assert [len(request.message.resource_logs) for request in later] == [2] * 5  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_a_full_queue_refuses_with_backpressure_until_it_drained() -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink:
            sink.set_delay(0.3)
            full = ExportQueue(
                grpc_exporter(sink, "small"), queue_settings(max_records=100), FAST_RETRY, telemetry
            )
            roomy = ExportQueue(grpc_exporter(sink, "roomy"), queue_settings(), FAST_RETRY, telemetry)
            fanout = Fanout([roomy, full])
            fanout.check_room(60, 100)
            await fanout.put(logs_request(range(60)).SerializeToString(), 60)
            with pytest.raises(Backpressure, match="small: queue full"):
                fanout.check_room(41, 100)  # one record past the limit
            assert metric(telemetry, "lipservice_export_enqueue_refusals_total", exporter="small") == 1
            assert roomy.queued_records == 60  # admitted by all or by none: nothing was half-put
            fanout.check_room(40, 100)  # exactly up to the limit
            for queue in (full, roomy):
                await queue.start()
            await async_wait_until(lambda: full.queued_records == 0, 10, what="the small queue to drain")
            fanout.check_room(100, 100)
            for queue in (full, roomy):
                await queue.shutdown(time.monotonic() + 5)
            assert outcome(telemetry, "small", "sent") == outcome(telemetry, "roomy", "sent") == 60

    asyncio.run(scenario())


def test_a_request_larger_than_the_whole_queue_is_refused_for_good() -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink:
            queue = ExportQueue(
                grpc_exporter(sink), queue_settings(max_records=100, max_bytes=4096), FAST_RETRY, telemetry
            )
            with pytest.raises(PayloadTooLarge, match=r"101 records .* never fit .*queue.max_records 100"):
                queue.check_room(101, 10)  # empty, and still refused: it could never fit
            with pytest.raises(PayloadTooLarge, match=r"queue.max_bytes 4096"):
                queue.check_room(1, 4097)
            queue.check_room(100, 4096)
            assert metric(telemetry, "lipservice_export_enqueue_refusals_total", exporter="upstream") == 0

    asyncio.run(scenario())


def test_permanent_errors_are_dropped_at_once_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink, export_queue(grpc_exporter(sink), telemetry) as queue:
            sink.fail_grpc(grpc.StatusCode.INVALID_ARGUMENT, message="schema says no")
            put(queue, 0, 30)
            await async_wait_until(
                lambda: outcome(telemetry, "upstream", "failed") == 30, 10, what="the drop"
            )
            assert sink.attempts("grpc") == 1
            assert metric(telemetry, "lipservice_export_retries_total", exporter="upstream") == 0
            assert queue.queued_records == 0

    with caplog.at_level(logging.ERROR, logger="lipservice_proxy.exporters.queue"):
        asyncio.run(scenario())
    assert "dropping 30 records: gRPC INVALID_ARGUMENT: schema says no" in caplog.text


def test_retries_end_at_max_elapsed_and_the_batch_counts_as_failed() -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        retry = RetrySettings(initial_interval=0.05, max_interval=0.1, max_elapsed=0.5)
        async with OtlpSink() as sink, export_queue(grpc_exporter(sink), telemetry, retry) as queue:
            sink.fail_grpc(grpc.StatusCode.UNAVAILABLE)
            put(queue, 0, 7)
            await async_wait_until(
                lambda: outcome(telemetry, "upstream", "failed") == 7, 10, what="giving up"
            )
            assert 2 <= sink.attempts("grpc") <= 12  # bounded by max_elapsed / initial_interval

    asyncio.run(scenario())


def test_partial_success_counts_rejected_records() -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink, export_queue(grpc_exporter(sink), telemetry) as queue:
            sink.set_partial_success(4, "4 records too old")
            put(queue, 0, 25)
            await async_wait_until(lambda: outcome(telemetry, "upstream", "sent") == 21, 10, what="the send")
            assert outcome(telemetry, "upstream", "rejected") == 4

    asyncio.run(scenario())


class FirstCallBreaks(LogExporter):
    """A real exporter whose first export hits a bug (not an ExportError)."""

    def __init__(self, inner: OtlpGrpcExporter) -> None:
        super().__init__(inner.name)
        self._inner = inner
        self.calls = 0

    async def start(self) -> None:
        await self._inner.start()

    async def export(self, payload: bytes, records: int) -> ExportResult:
        self.calls += 1
        if self.calls == 1:
            raise KeyError("a bug in an exporter")
        return await self._inner.export(payload, records)

    async def shutdown(self) -> None:
        await self._inner.shutdown()


def test_an_exporter_bug_drops_its_batch_but_not_the_sender(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with (
            OtlpSink() as sink,
            export_queue(FirstCallBreaks(grpc_exporter(sink)), telemetry, num_senders=1) as queue,
        ):
            put(queue, 0, 5)
            await async_wait_until(lambda: outcome(telemetry, "upstream", "failed") == 5, 10, what="the drop")
            put(queue, 5, 5)
            assert seqs_of(await sink.wait_for_records(5)) == list(range(5, 10))

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert "dropping 5 records after an unexpected error" in caplog.text


def test_shutdown_drains_what_is_queued() -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink:
            sink.set_delay(0.05)
            queue = ExportQueue(
                grpc_exporter(sink), queue_settings(batch={"max_records": 50}), FAST_RETRY, telemetry
            )
            await queue.start()
            for index in range(10):
                put(queue, index * 50, 50)
            await queue.shutdown(time.monotonic() + 20)
            assert sink.log_record_count == 500
            assert outcome(telemetry, "upstream", "sent") == 500
            assert metric(telemetry, "lipservice_export_queue_records", exporter="upstream") == 0

    asyncio.run(scenario())


def test_a_send_on_the_wire_at_the_deadline_is_counted_by_its_outcome() -> None:
    async def scenario() -> None:
        telemetry = Telemetry()
        async with OtlpSink() as sink:
            sink.set_delay(0.3)  # the answer comes 0.3 s after the request arrived
            settings = {"num_senders": 1, "batch": {"max_records": 10, "timeout": "10ms"}}
            queue = ExportQueue(grpc_exporter(sink), queue_settings(**settings), FAST_RETRY, telemetry)
            await queue.start()
            for index in range(3):
                put(queue, index * 10, 10)
            await async_wait_until(lambda: sink.attempts("grpc") == 1, 10, what="a send on the wire")
            await queue.shutdown(time.monotonic() + 0.05)  # the deadline passes mid-send
            assert sink.log_record_count == 10
            assert outcome(telemetry, "upstream", "sent") == 10  # it arrived: not counted as failed
            assert outcome(telemetry, "upstream", "failed") == 20  # never sent

    asyncio.run(scenario())
