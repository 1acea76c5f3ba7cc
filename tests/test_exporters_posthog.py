"""PostHog exporter against a local PostHog-like endpoint: path and bearer token, 401, 429 with
Retry-After, bodies split under the 2 MiB limit with every record delivered exactly once."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.config import PosthogExporterConfig, QueueSettings, RetrySettings
from lipservice_proxy.errors import ConfigError, ExportError, PermanentExportError, RetryableExportError
from lipservice_proxy.exporters import build_exporter
from lipservice_proxy.exporters.base import ExportResult
from lipservice_proxy.exporters.posthog import PosthogExporter, split_request
from lipservice_proxy.exporters.queue import ExportQueue
from lipservice_proxy.exporters.retry import call_with_retry
from lipservice_proxy.telemetry import Telemetry
from tests.support.delivery import outcome
from tests.support.leaks import no_resource_leaks  # noqa: F401 - a fixture
from tests.support.otlp_samples import attribute, log_request
from tests.support.posthog_server import PosthogServer
from tests.support.sink import LogEntry
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.usefixtures("no_resource_leaks")

TOKEN = "phc_TestProjectToken123"
MIB = 1024 * 1024


def exporter_for(server: PosthogServer, token: str = TOKEN, **overrides: Any) -> PosthogExporter:
    config = PosthogExporterConfig.model_validate({"type": "posthog", "host": server.url, **overrides})
    exporter = build_exporter(config, environ={"POSTHOG_API_KEY": token})
    assert isinstance(exporter, PosthogExporter)
    return exporter


def flatten(request: ExportLogsServiceRequest) -> list[LogEntry]:
    return [
        LogEntry(resource_logs.resource, scope_logs.scope, record)
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]


def big_request(target_bytes: int, seed: int = 0) -> ExportLogsServiceRequest:
    """Loghub records over several resources and scopes, each padded to a random size, until
    the serialized request reaches `target_bytes`."""
    rng = random.Random(seed)
    request = log_request("HDFS", 2000, services=4, seed=seed)
    for index, resource_logs in enumerate(request.resource_logs):
        second_scope = resource_logs.scope_logs.add()
        second_scope.scope.name = f"second-scope-{index}"
        second_scope.log_records.extend(
            log_request("OpenSSH", 200, services=1, seed=index).resource_logs[0].scope_logs[0].log_records
        )
    scopes = [scope for resource_logs in request.resource_logs for scope in resource_logs.scope_logs]
    for index, record in enumerate(record for scope in scopes for record in scope.log_records):
        record.attributes.append(attribute("padding", "x" * rng.randrange(200, 4000)))
        if index % 100 == 0 and request.ByteSize() >= target_bytes:
            break
    return request


async def send(exporter: PosthogExporter, payload: bytes, records: int = 0) -> ExportResult:
    await exporter.start()
    try:
        return await exporter.export(payload, records)
    finally:
        await exporter.shutdown()


def test_path_bearer_and_gzip() -> None:
    request = log_request("OpenSSH", 50)

    async def scenario() -> PosthogServer:
        async with PosthogServer(TOKEN) as server:
            assert await send(exporter_for(server), request.SerializeToString(), 50) == ExportResult()
            return server

    server = asyncio.run(scenario())
    assert server.authorizations() == [f"Bearer {TOKEN}"]
    assert server.content_encodings == ["gzip"]
    assert server.requests() == [request]


def test_wrong_token_is_permanent_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> ExportError:
        async with PosthogServer(TOKEN) as server:
            with pytest.raises(ExportError) as caught:
                await send(
                    exporter_for(server, token="phc_WrongToken999"),
                    log_request(records=1).SerializeToString(),
                )
            assert server.unauthorized == 1
            return caught.value

    with caplog.at_level(logging.ERROR):
        error = asyncio.run(scenario())
    assert isinstance(error, PermanentExportError)
    assert "HTTP 401" in str(error) and "POSTHOG_API_KEY is wrong" in str(error)
    assert "PostHog refused the project token" in caplog.text and "POSTHOG_API_KEY" in caplog.text
    assert "phc_WrongToken999" not in caplog.text + str(error)


def test_missing_token_is_a_clear_error_at_build() -> None:
    config = PosthogExporterConfig(type="posthog", api_key_env="MY_POSTHOG_TOKEN")
    with pytest.raises(
        ConfigError, match="MY_POSTHOG_TOKEN is not set; it must hold the PostHog project token"
    ):
        build_exporter(config, environ={"MY_POSTHOG_TOKEN": "  "})


def test_rate_limit_retry_after_is_honoured_then_delivered() -> None:
    delays: list[float] = []
    # A backoff far shorter than the server's hint: the delay used must be the hint.
    settings = RetrySettings(initial_interval=0.01, max_interval=0.01, max_elapsed=120)

    async def scenario() -> tuple[ExportResult, PosthogServer]:
        async with PosthogServer(TOKEN) as server:
            server.rate_limit(times=1, retry_after=1)
            exporter = exporter_for(server)
            await exporter.start()
            try:
                payload = log_request(records=20).SerializeToString()
                result = await call_with_retry(
                    lambda: exporter.export(payload, 20),
                    settings,
                    stop=asyncio.Event(),
                    on_retry=lambda _error, delay: delays.append(delay),
                )
            finally:
                await exporter.shutdown()
            return result, server

    result, server = asyncio.run(scenario())
    assert result == ExportResult()
    assert delays == [1.0]
    assert server.rate_limited == 1 and len(server.log_records()) == 20


def test_big_payload_is_split_under_the_limit_with_every_record_once() -> None:
    request = big_request(5 * MIB)
    payload = request.SerializeToString()
    assert len(payload) >= 5 * MIB

    async def scenario() -> tuple[ExportResult, PosthogServer]:
        async with PosthogServer(TOKEN) as server:
            return await send(exporter_for(server), payload, len(flatten(request))), server

    result, server = asyncio.run(scenario())
    assert result == ExportResult()
    assert len(server.body_sizes) >= 3 and not server.oversized_bodies
    assert all(size <= 2 * MIB for size in server.body_sizes)
    assert server.log_records() == flatten(request)


def test_a_failed_part_is_retried_without_resending_the_parts_already_accepted() -> None:
    request = big_request(5 * MIB, seed=1)
    payload = request.SerializeToString()

    async def scenario() -> PosthogServer:
        async with PosthogServer(TOKEN) as server:
            server.rate_limit(times=1, retry_after=0, after=1)  # the second body is refused once
            exporter = exporter_for(server)
            await exporter.start()
            try:
                with pytest.raises(RetryableExportError):
                    await exporter.export(payload, 0)
                assert len(server.body_sizes) == 1
                assert await exporter.export(payload, 0) == ExportResult()
            finally:
                await exporter.shutdown()
            return server

    server = asyncio.run(scenario())
    assert server.log_records() == flatten(request)


def test_a_record_over_the_limit_is_dropped_and_named_the_rest_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = log_request("HDFS", 300)
    giant = request.resource_logs[1].scope_logs[0].log_records[5]
    giant.attributes.append(attribute("dump", "y" * (2 * MIB + 10)))
    giant_size = giant.ByteSize()
    expected = [entry for entry in flatten(request) if entry[2] is not giant]

    async def scenario() -> tuple[ExportResult, PosthogServer, ExportError]:
        async with PosthogServer(TOKEN) as server:
            result = await send(exporter_for(server), request.SerializeToString(), 300)
            alone = ExportLogsServiceRequest()
            alone.resource_logs.add().scope_logs.add().log_records.append(giant)
            with pytest.raises(ExportError) as caught:
                await send(exporter_for(server), alone.SerializeToString(), 1)
            return result, server, caught.value

    with caplog.at_level(logging.ERROR):
        result, server, error = asyncio.run(scenario())
    assert result.rejected_records == 1
    assert f"{giant_size} bytes" in result.message and f"{giant_size} bytes" in caplog.text
    assert [record for _, _, record in server.log_records()] == [record for _, _, record in expected]
    assert isinstance(error, PermanentExportError) and f"{giant_size} bytes" in str(error)


@pytest.mark.parametrize("max_bytes", [64 * 1024, 300_000, 2 * MIB])
def test_split_request_bounds_every_body_and_keeps_order(max_bytes: int) -> None:
    request = big_request(3 * MIB, seed=2)
    split = split_request(request, max_bytes)
    parts = [ExportLogsServiceRequest.FromString(body) for body in split.bodies]
    assert all(len(body) <= max_bytes for body in split.bodies)
    assert [entry for part in parts for entry in flatten(part)] == flatten(request)
    assert split.oversized == []


@pytest.mark.parametrize("disk", [False, True], ids=["memory", "disk"])
def test_over_quota_beyond_max_elapsed_drops_from_memory_and_waits_on_disk(
    disk: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostHog over quota answers 429 with a Retry-After longer than the retry budget."""
    settings = {"batch": {"timeout": "10ms"}, **({"directory": str(tmp_path)} if disk else {})}
    retry = RetrySettings(initial_interval=0.01, max_interval=0.05, max_elapsed=0.5)
    telemetry = Telemetry()

    async def scenario() -> PosthogServer:
        async with PosthogServer(TOKEN) as server:
            server.rate_limit(times=1, retry_after=1)
            queue = ExportQueue(
                exporter_for(server), QueueSettings.model_validate(settings), retry, telemetry
            )
            await queue.start()
            try:
                payload = log_request(records=20).SerializeToString()
                queue.check_room(20, len(payload))
                durable = queue.put(payload, 20)
                if durable is not None:
                    await durable
                await async_wait_until(lambda: queue.queued_records == 0, 10, what="the batch's outcome")
            finally:
                await queue.shutdown(time.monotonic() + 5)
            return server

    with caplog.at_level(logging.WARNING, logger="lipservice_proxy.exporters.queue"):
        server = asyncio.run(scenario())
    outcomes = {kind: outcome(telemetry, "posthog", kind) for kind in ("sent", "failed")}
    messages = [record.getMessage() for record in caplog.records]
    assert server.rate_limited == 1
    if disk:
        assert outcomes == {"sent": 20, "failed": 0} and len(server.log_records()) == 20
        assert any("retrying 20 records in 1.00s (as upstream asked)" in text for text in messages), messages
    else:
        assert outcomes == {"sent": 0, "failed": 20} and server.log_records() == []
        assert any(
            "dropping 20 records: upstream asked to wait 1s before retrying, more than the" in text
            and "a disk queue (queue.directory) would keep them" in text
            for text in messages
        ), messages
