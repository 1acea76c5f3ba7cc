"""call_with_retry against the real sink: retry until success, give up at max_elapsed, never retry a
permanent error, and let `stop` cut a long backoff short. Plus the pure backoff schedule."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from lipservice_proxy.backoff import Backoff
from lipservice_proxy.config import OtlpGrpcExporterConfig, OtlpHttpExporterConfig, RetrySettings
from lipservice_proxy.errors import ExportError, PermanentExportError, RetryableExportError
from lipservice_proxy.exporters import build_exporter
from lipservice_proxy.exporters.base import ExportResult
from lipservice_proxy.exporters.retry import HintBeyondBudget, RetriesExhausted, call_with_retry
from tests.support.leaks import no_resource_leaks  # noqa: F401 - a fixture
from tests.support.otlp_samples import log_request
from tests.support.sink import OtlpSink, SinkThread
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.usefixtures("no_resource_leaks")

FAST = RetrySettings(initial_interval=0.01, max_interval=0.05, max_elapsed=20)
PAYLOAD = log_request(records=4).SerializeToString()


@pytest.fixture(scope="module")
def sink_thread() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


@pytest.fixture
def sink(sink_thread: SinkThread) -> OtlpSink:
    sink_thread.sink.reset()
    return sink_thread.sink


def exporter_config(sink: OtlpSink, protocol: str) -> Any:
    if protocol == "grpc":
        return OtlpGrpcExporterConfig(type="otlp_grpc", endpoint=f"http://{sink.grpc_endpoint}")
    return OtlpHttpExporterConfig(type="otlp_http", endpoint=f"{sink.http_url}/v1/logs")


def fail(sink: OtlpSink, protocol: str, *, times: int | None, retryable: bool = True, **options: Any) -> None:
    if protocol == "grpc":
        sink.fail_grpc(
            grpc.StatusCode.UNAVAILABLE if retryable else grpc.StatusCode.INVALID_ARGUMENT,
            times=times,
            **options,
        )
    else:
        sink.fail_http(503 if retryable else 400, times=times, **options)


async def deliver(
    config: Any,
    settings: RetrySettings,
    retries: list[tuple[ExportError, float]],
    stop: asyncio.Event | None = None,
) -> ExportResult:
    exporter = build_exporter(config)
    await exporter.start()
    try:
        return await call_with_retry(
            lambda: exporter.export(PAYLOAD, 4),
            settings,
            stop=stop or asyncio.Event(),
            on_retry=lambda error, delay: retries.append((error, delay)),
        )
    finally:
        await exporter.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_retries_until_the_upstream_accepts(sink: OtlpSink, protocol: str) -> None:
    fail(sink, protocol, times=3)
    retries: list[tuple[ExportError, float]] = []
    assert asyncio.run(deliver(exporter_config(sink, protocol), FAST, retries)) == ExportResult()
    assert len(retries) == 3 and all(error.retryable for error, _ in retries)
    assert sink.attempts(protocol) == 4 and sink.log_record_count == 4


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_gives_up_at_max_elapsed(sink: OtlpSink, protocol: str) -> None:
    fail(sink, protocol, times=None)
    settings = RetrySettings(initial_interval=0.05, max_interval=0.1, max_elapsed=0.6)
    retries: list[tuple[ExportError, float]] = []
    started = time.monotonic()
    with pytest.raises(
        RetriesExhausted, match=r"gave up after \d+ attempts in [\d.]+s \(retry.max_elapsed 0.6s\)"
    ) as caught:
        asyncio.run(deliver(exporter_config(sink, protocol), settings, retries))
    elapsed = time.monotonic() - started
    assert not caught.value.retryable  # the batch is given up: permanent for whoever holds it
    assert sink.attempts(protocol) == len(retries) + 1 >= 2
    assert sum(delay for _, delay in retries) <= settings.max_elapsed
    assert elapsed < settings.max_elapsed + 5  # bounded by the deadline, not by the number of attempts


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_permanent_errors_are_not_retried(sink: OtlpSink, protocol: str) -> None:
    fail(sink, protocol, times=None, retryable=False)
    retries: list[tuple[ExportError, float]] = []
    with pytest.raises(PermanentExportError):
        asyncio.run(deliver(exporter_config(sink, protocol), FAST, retries))
    assert retries == [] and sink.attempts(protocol) == 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_stop_interrupts_a_long_backoff_promptly(sink: OtlpSink, protocol: str) -> None:
    fail(sink, protocol, times=None, retry_after=120)  # the server asks for a two-minute pause
    retries: list[tuple[ExportError, float]] = []
    settings = RetrySettings(max_elapsed=600, max_interval=300)

    async def scenario() -> None:
        stop = asyncio.Event()
        delivery = asyncio.create_task(deliver(exporter_config(sink, protocol), settings, retries, stop))
        await async_wait_until(lambda: retries, what="the first backoff to begin")
        stop.set()
        await asyncio.wait_for(delivery, timeout=5)  # far less than the 120 s backoff

    with pytest.raises(RetryableExportError):  # the last error comes back so a disk queue keeps the batch
        asyncio.run(scenario())
    assert [delay for _, delay in retries] == [120.0]
    assert sink.attempts(protocol) == 1


def test_retry_disabled_gives_up_after_one_attempt(sink: OtlpSink) -> None:
    fail(sink, "http", times=None)
    with pytest.raises(RetriesExhausted, match="retry disabled"):
        asyncio.run(deliver(exporter_config(sink, "http"), RetrySettings(enabled=False), []))
    assert sink.attempts("http") == 1


def test_backoff_grows_to_the_cap_with_bounded_jitter_and_hints_bound_it_from_below() -> None:
    settings = RetrySettings(initial_interval=1, max_interval=5, multiplier=2, randomization_factor=0.5)
    low, high = Backoff(settings, rng=lambda: 0.0), Backoff(settings, rng=lambda: 1.0 - 1e-12)
    assert [round(low.next_delay(), 6) for _ in range(5)] == [0.5, 1.0, 2.0, 2.5, 2.5]
    assert [round(high.next_delay(), 6) for _ in range(5)] == [1.5, 3.0, 6.0, 7.5, 7.5]
    hinted = Backoff(settings, rng=lambda: 0.0)
    assert hinted.next_delay(hint=42.0) == 42.0  # a longer hint is waited out
    assert hinted.next_delay(hint=0.0) == 1.0  # a shorter one does not shorten the backoff
    assert hinted.next_delay(hint=-1.0) == 2.0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_zero_retry_hint_keeps_the_backoff(sink: OtlpSink, protocol: str) -> None:
    fail(sink, protocol, times=None, retry_after=0)  # "Retry-After: 0" / RetryInfo of 0 s, forever
    settings = RetrySettings(initial_interval=0.1, max_interval=0.2, max_elapsed=1.0, randomization_factor=0)
    retries: list[tuple[ExportError, float]] = []
    with pytest.raises(
        RetriesExhausted, match=r"gave up after \d+ attempts in [\d.]+s \(retry.max_elapsed 1s\)"
    ):
        asyncio.run(deliver(exporter_config(sink, protocol), settings, retries))
    assert all(error.retry_after == 0 for error, _ in retries)
    assert [delay for _, delay in retries][:3] == [0.1, 0.15000000000000002, 0.2]
    assert sink.attempts(protocol) == len(retries) + 1 <= 8  # a tight loop made hundreds in 1 s


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_hint_beyond_max_elapsed_gives_up_at_once_and_says_why(sink: OtlpSink, protocol: str) -> None:
    if protocol == "grpc":  # RESOURCE_EXHAUSTED with RetryInfo, as a quota-limited gRPC upstream answers
        sink.fail_grpc(grpc.StatusCode.RESOURCE_EXHAUSTED, times=None, retry_after=900)
    else:  # PostHog's answer when a project is over its quota
        sink.fail_http(429, times=None, retry_after=900)
    retries: list[tuple[ExportError, float]] = []
    started = time.monotonic()
    with pytest.raises(HintBeyondBudget) as caught:
        asyncio.run(deliver(exporter_config(sink, protocol), RetrySettings(max_elapsed=300), retries))
    assert time.monotonic() - started < 5  # nothing was waited for
    assert re.search(
        r"upstream asked to wait 900s before retrying, more than the 3\d\d\.\ds left of "
        r"retry.max_elapsed \(300s\), after 1 attempts",
        str(caught.value),
    ), str(caught.value)
    assert not caught.value.retryable and retries == [] and sink.attempts(protocol) == 1


def test_outlasting_hints_waits_past_max_elapsed_then_delivers(sink: OtlpSink) -> None:
    sink.fail_http(429, times=2, retry_after=0.4)  # two hints, each longer than the whole budget
    retries: list[tuple[ExportError, float]] = []
    settings = RetrySettings(initial_interval=0.01, max_interval=0.05, max_elapsed=0.2)

    async def scenario() -> ExportResult:
        exporter = build_exporter(exporter_config(sink, "http"))
        await exporter.start()
        try:
            return await call_with_retry(
                lambda: exporter.export(PAYLOAD, 4),
                settings,
                stop=asyncio.Event(),
                on_retry=lambda error, delay: retries.append((error, delay)),
                outlast_hints=True,
            )
        finally:
            await exporter.shutdown()

    assert asyncio.run(scenario()) == ExportResult()
    assert [delay for _, delay in retries] == [0.4, 0.4]
    assert sink.attempts("http") == 3 and sink.log_record_count == 4


def test_a_reconnection_ends_the_wait_early_and_a_failing_watch_does_not(sink: OtlpSink) -> None:
    settings = RetrySettings(initial_interval=0.5, max_interval=0.5, max_elapsed=20, randomization_factor=0)

    async def broken_watch() -> None:
        raise RuntimeError("the connection cannot be watched")

    async def timed(reconnected: Any) -> float:
        fail(sink, "http", times=1)
        exporter = build_exporter(exporter_config(sink, "http"))
        await exporter.start()
        started = time.monotonic()
        try:
            await call_with_retry(
                lambda: exporter.export(PAYLOAD, 4), settings, stop=asyncio.Event(), reconnected=reconnected
            )
        finally:
            await exporter.shutdown()
        return time.monotonic() - started

    assert asyncio.run(timed(lambda: asyncio.sleep(0))) < 0.4  # "reconnected" at once: no 0.5 s wait
    assert asyncio.run(timed(broken_watch)) >= 0.5  # no signal: the whole backoff, not a tight loop
    assert sink.attempts("http") == 4
