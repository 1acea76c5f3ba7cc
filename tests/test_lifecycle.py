"""The proxy as a process: start-up on defaults, SIGTERM drains the queues and exits 0, or 3 when it
had to drop acknowledged records."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.config import ProxyConfig
from lipservice_proxy.errors import ConfigError, LipserviceError
from lipservice_proxy.lifecycle import Deadline, Lifecycle
from lipservice_proxy.service import Proxy

from .support.otlp_samples import trace_request
from .support.proxy import ProxyProcess, http_get, loopback_config, sink_exporter
from .support.sdk import emit, sdk_logger
from .support.sink import OtlpSink, SinkThread
from .support.waiting import async_wait_until, wait_until

KEEP_ALL = "version: 1\nseverity_rates: {TRACE: 1, DEBUG: 1, INFO: 1, WARN: 1}\n"


@pytest.fixture
def sink() -> Any:
    with SinkThread() as running:
        yield running


def test_sigterm_flushes_queued_records_then_exits_zero(tmp_path: Path, sink: SinkThread) -> None:
    (tmp_path / "policy.yaml").write_text(KEEP_ALL)
    sink.sink.set_delay(0.3)  # a slow upstream: records are still queued when SIGTERM arrives
    config = {
        "sampler": {"policy_file": "policy.yaml"},
        "exporters": [
            sink_exporter(sink.sink.grpc_endpoint, queue={"num_senders": 1, "batch": {"max_records": 50}})
        ],
    }
    with ProxyProcess(config, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint, batch_size=50) as logger:
            emit(logger, ({"body": f"order {i} shipped", "severity": "INFO"} for i in range(500)))
        status, body = http_get(proxy.admin_url + "/metrics")
        assert (
            status == 200
            and b'lipservice_log_records_received_total{service="checkout",severity="INFO"} 500.0' in body
        )
        assert sink.sink.log_record_count < 500  # the queue still holds records
        assert proxy.terminate(timeout=60) == 0
    assert sink.sink.log_record_count == 500
    messages = [line.get("msg", "") for line in proxy.log_lines]
    assert any("shutting down" in message for message in messages)


def test_runs_on_embedded_defaults(tmp_path: Path) -> None:
    """Only loopback ports configured: debug exporter on stdout, built-in policy (no policies/ here)."""
    with ProxyProcess({}, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, [{"body": "payment 1 failed", "severity": "ERROR"}])
        stdout = tmp_path / "stdout.log"
        wait_until(lambda: b"payment 1 failed" in stdout.read_bytes(), what="the debug exporter's line")
        status, body = http_get(proxy.admin_url + "/api/v1/policy")
        assert status == 200 and b"built-in default" in body
        assert proxy.terminate() == 0


REPOSITORY = Path(__file__).resolve().parent.parent


def image_config(data: Path) -> dict[str, Any]:
    """docker/config.yaml as the image runs it, with its data directory moved to `data` (empty)."""
    text = (REPOSITORY / "docker" / "config.yaml").read_text()
    text = text.replace("/var/lib/lipservice", str(data))
    text = text.replace("/etc/lipservice/policies", str(REPOSITORY / "policies"))
    config: dict[str, Any] = yaml.safe_load(text)
    config["patterns"]["save_interval"] = "100ms"
    return config


def test_image_config_saves_pattern_state_into_an_empty_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = image_config(data)
    state_file = Path(config["patterns"]["state_file"])
    assert not state_file.parent.exists()  # as in the image and the chart: nothing creates patterns/
    with ProxyProcess(config, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, ({"body": f"user {i} logged in", "severity": "INFO"} for i in range(20)))
        wait_until(
            lambda: proxy.metric("lipservice_pattern_state_saves_total", {"outcome": "success"}) >= 2,
            what="periodic pattern state saves",
        )
        assert proxy.terminate() == 0
    assert b"user <NUM> logged in" in state_file.read_bytes()
    assert not [line for line in proxy.log_lines if line.get("level") == "error"]


def test_unwritable_pattern_state_is_logged_and_counted_and_shutdown_still_exits_zero(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a regular file where the data directory should be\n")
    config = image_config(tmp_path / "elsewhere")
    config["patterns"]["state_file"] = str(blocker / "patterns" / "state.json")
    with ProxyProcess(config, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, [{"body": "user 1 logged in", "severity": "INFO"}])
        # many failures: the periodic save outlives each, and the log says so only at a bounded rate
        failures = wait_until(
            lambda: (
                proxy.metric("lipservice_pattern_state_saves_total", {"outcome": "error"}) >= 15
                and proxy.metric("lipservice_pattern_state_saves_total", {"outcome": "error"})
            ),
            timeout=20,
            what="failed pattern state saves counted",
        )
        status, _ = http_get(proxy.admin_url + "/healthz")
        assert status == 200
        logged = [line["msg"] for line in proxy.log_lines if line.get("level") == "error"]
        assert 1 <= len(logged) < failures
        assert proxy.terminate() == 0
    errors = [line["msg"] for line in proxy.log_lines if line.get("level") == "error"]
    assert all(message.startswith("cannot save pattern state: ") for message in errors)
    assert str(blocker / "patterns" / "state.json") in errors[0]


def test_sigterm_that_drops_acknowledged_records_exits_3_and_says_how_to_keep_them(
    tmp_path: Path, sink: SinkThread
) -> None:
    (tmp_path / "policy.yaml").write_text(KEEP_ALL)
    sink.sink.fail_grpc(grpc.StatusCode.UNAVAILABLE)  # upstream down for the whole run
    config = {
        "sampler": {"policy_file": "policy.yaml"},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],  # a memory queue, 30 s of retries
    }
    with ProxyProcess(config, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint, batch_size=50) as logger:
            emit(logger, ({"body": f"order {i} shipped", "severity": "INFO"} for i in range(300)))
        status, body = http_get(proxy.admin_url + "/metrics")
        assert status == 200
        assert b'lipservice_log_records_received_total{service="checkout",severity="INFO"} 300.0' in body
        assert proxy.terminate(timeout=60) == 3
    assert sink.sink.log_record_count == 0
    errors = [line.get("msg", "") for line in proxy.log_lines if line.get("level") == "error"]
    assert any(
        "shutdown deadline passed with 300 acknowledged records unsent" in message
        and "queue.directory (the disk queue)" in message
        for message in errors
    ), errors
    assert any("300 acknowledged records were dropped at shutdown" in message for message in errors), errors


# ---- the HTTP receiver's grace at shutdown ----


def one_record_request() -> bytes:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value = "order 1 shipped"
    record.severity_text = "INFO"
    return request.SerializeToString()


async def post_started(
    port: int, path: str, body: bytes, *, sent: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A POST whose handler runs (the proxy answered `100 Continue`), with `sent` bytes of its body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/x-protobuf\r\n".encode()
        + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 100")
    await reader.readline()
    writer.write(body[:sent])
    await writer.drain()
    return reader, writer


async def running_proxy(overrides: dict[str, Any]) -> Proxy:
    config = loopback_config({"receivers": {"http": {"read_timeout": "30s"}}, **overrides})
    proxy = Proxy(ProxyConfig.model_validate(config))
    await proxy.start()
    return proxy


def test_http_shutdown_lets_a_slow_request_finish_within_grace() -> None:
    """A request whose handler is busy (here: a slow passthrough upstream) is answered before the
    receiver's shutdown returns, and the shutdown does not wait out its grace."""

    async def scenario() -> None:
        async with OtlpSink() as upstream:
            upstream.set_delay(1.0)
            proxy = await running_proxy({"passthrough": {"traces": f"http://{upstream.grpc_endpoint}"}})
            try:
                assert proxy.http is not None
                body = trace_request().SerializeToString()
                reader, writer = await post_started(proxy.http.port, "/v1/traces", body, sent=len(body))
                await async_wait_until(lambda: upstream.attempts("grpc"), what="the forwarded request")
                started = time.monotonic()
                await asyncio.wait_for(proxy.http.shutdown(grace=20.0), 15)
                assert time.monotonic() - started < 20.0
                assert b" 200 " in await asyncio.wait_for(reader.readline(), 5)
                assert len(upstream.requests("traces")) == 1
                writer.close()
            finally:
                await proxy.shutdown(drain_seconds=2.0)

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_http_shutdown_cuts_a_stuck_request_at_grace() -> None:
    """A request stuck on its body (aiohttp reads nothing more once shutdown begins) is cut at the
    grace, not held for its read_timeout (30 s here)."""

    async def scenario() -> None:
        proxy = await running_proxy({})
        try:
            assert proxy.http is not None
            body = one_record_request()
            reader, writer = await post_started(proxy.http.port, "/v1/logs", body, sent=len(body) // 2)
            started = time.monotonic()
            await asyncio.wait_for(proxy.http.shutdown(grace=0.5), 10)
            assert 0.5 <= time.monotonic() - started < 5.0
            answer = b""
            with contextlib.suppress(ConnectionError):
                answer = await asyncio.wait_for(reader.read(), 5)
            assert b" 200 " not in answer  # cut unanswered: the client still holds its records
            writer.close()
        finally:
            await proxy.shutdown(drain_seconds=2.0)

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_proxy_that_cannot_start_closes_what_had_started() -> None:
    """The HTTP port is taken: the admin and the gRPC receiver, already listening, close again."""

    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            endpoint = f"127.0.0.1:{taken.getsockname()[1]}"
            proxy = Proxy(
                ProxyConfig.model_validate(loopback_config({"receivers": {"http": {"endpoint": endpoint}}}))
            )
            with pytest.raises(ConfigError, match=f"receivers.http.endpoint: {endpoint} is already in use"):
                await proxy.start()
        assert proxy.grpc is not None and proxy.admin is not None
        assert proxy.grpc.port and proxy.admin.port  # both had started
        assert refuses_connections(proxy.grpc.port) and refuses_connections(proxy.admin.port)
        assert not proxy.views.ready

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


# ---- the Lifecycle itself ----


def recorded_lifecycle(
    events: list[str], *, failing_start: str = "", failing_shutdown: str = ""
) -> Lifecycle:
    lifecycle = Lifecycle("test")

    def step(name: str, dropped: int | None) -> None:
        async def start() -> None:
            events.append(f"start {name}")
            if name == failing_start:
                raise LipserviceError(f"{name} cannot start")

        async def shutdown(deadline: Deadline) -> int | None:
            events.append(f"shutdown {name}")
            if name == failing_shutdown:
                raise RuntimeError(f"{name} cannot stop")
            return dropped

        lifecycle.add(name, start=start, shutdown=shutdown)

    step("exporters", 3)
    step("tasks", None)
    step("receivers", 4)
    return lifecycle


def test_lifecycle_starts_in_order_and_shuts_down_in_reverse_summing_the_dropped() -> None:
    events: list[str] = []

    async def scenario() -> int:
        lifecycle = recorded_lifecycle(events)
        await lifecycle.start()
        assert lifecycle.running
        dropped = await lifecycle.shutdown(Deadline.after(1.0))
        assert not lifecycle.running
        assert await lifecycle.shutdown(Deadline.after(1.0)) == 0  # a second shutdown has nothing left
        return dropped

    assert asyncio.run(scenario()) == 7
    assert events == [
        "start exporters",
        "start tasks",
        "start receivers",
        "shutdown receivers",
        "shutdown tasks",
        "shutdown exporters",
    ]


def test_a_failed_start_shuts_down_what_started_and_a_failing_shutdown_step_does_not_stop_the_rest() -> None:
    events: list[str] = []

    async def scenario() -> None:
        lifecycle = recorded_lifecycle(events, failing_start="receivers", failing_shutdown="tasks")
        with pytest.raises(LipserviceError, match="receivers cannot start"):
            await lifecycle.start()
        assert not lifecycle.running

    asyncio.run(scenario())
    assert events == [
        "start exporters",
        "start tasks",
        "start receivers",
        "shutdown tasks",
        "shutdown exporters",
    ]
