"""OTLP/gRPC exporter and channel against the real sink: data intact, metadata, gzip on the wire,
partial success, every status classified per the OTLP spec, RetryInfo, TLS and endpoint rules."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.config import ClientTLS, OtlpGrpcExporterConfig, RetrySettings
from lipservice_proxy.errors import ConfigError, ExportError, PermanentExportError, RetryableExportError
from lipservice_proxy.exporters.base import ExportResult
from lipservice_proxy.exporters.otlp_grpc import OtlpGrpcExporter
from lipservice_proxy.exporters.retry import call_with_retry
from lipservice_proxy.otlp.grpc_channel import GrpcTarget, parse_endpoint
from tests.support.certs import self_signed_certificate
from tests.support.exporting import export_error, export_once
from tests.support.leaks import no_resource_leaks  # noqa: F401 - a fixture
from tests.support.otlp_samples import any_value, log_request
from tests.support.sink import OtlpSink, SinkThread
from tests.support.tcp_relay import TcpRelay
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.usefixtures("no_resource_leaks")

# The OTLP specification's list, written out here rather than imported, so the test checks the code.
SPEC_RETRYABLE = {
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}


@pytest.fixture(scope="module")
def sink_thread() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


@pytest.fixture
def sink(sink_thread: SinkThread) -> OtlpSink:
    if not sink_thread.sink.running:
        sink_thread.start()
    sink_thread.sink.reset()
    return sink_thread.sink


def config_for(endpoint: str, **overrides: Any) -> OtlpGrpcExporterConfig:
    return OtlpGrpcExporterConfig.model_validate({"type": "otlp_grpc", "endpoint": endpoint, **overrides})


def test_every_record_arrives_intact_and_unreserialized(sink: OtlpSink) -> None:
    request = log_request("HDFS", 500)
    payload = request.SerializeToString()
    result = asyncio.run(export_once(config_for(f"http://{sink.grpc_endpoint}"), payload, 500))
    assert result == ExportResult()
    [received] = sink.requests("logs")
    assert received.body == payload
    assert received.message == request
    assert len(sink.log_records()) == 500


def test_concatenated_payloads_arrive_merged(sink: OtlpSink) -> None:
    first, second = log_request("HDFS", 20, seed=1), log_request("OpenSSH", 30, seed=2)
    payload = first.SerializeToString() + second.SerializeToString()
    asyncio.run(export_once(config_for(f"http://{sink.grpc_endpoint}"), payload, 50))
    merged = ExportLogsServiceRequest()
    merged.MergeFrom(first)
    merged.MergeFrom(second)
    assert sink.requests("logs")[0].message == merged
    assert sink.log_record_count == 50


def test_headers_arrive_as_metadata(sink: OtlpSink) -> None:
    config = config_for(
        f"http://{sink.grpc_endpoint}", headers={"X-Tenant": "blue", "authorization": "Bearer t0k"}
    )
    asyncio.run(export_once(config, log_request(records=3).SerializeToString()))
    headers = sink.requests("logs")[0].headers
    assert headers["x-tenant"] == "blue"
    assert headers["authorization"] == "Bearer t0k"
    assert headers["user-agent"].startswith("lipservice-proxy/")


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_compression_on_the_wire(sink: OtlpSink, compression: str) -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for index in range(4000):
        records.add(body=any_value(f"GET /api/v1/items/{index % 10} 200 OK served by backend pool alpha"))
    payload = request.SerializeToString()

    async def scenario() -> int:
        async with TcpRelay(int(sink.grpc_endpoint.rpartition(":")[2])) as relay:
            await export_once(config_for(f"http://127.0.0.1:{relay.port}", compression=compression), payload)
            return relay.bytes_up

    sent = asyncio.run(scenario())
    assert sink.requests("logs")[0].message == request
    if compression == "gzip":
        assert sent < len(payload) / 10
    else:
        assert sent > len(payload)


def test_partial_success_is_reported(sink: OtlpSink) -> None:
    sink.set_partial_success(7, "7 records had no body")
    result = asyncio.run(
        export_once(config_for(f"http://{sink.grpc_endpoint}"), log_request(records=10).SerializeToString())
    )
    assert result == ExportResult(rejected_records=7, message="7 records had no body")


@pytest.mark.parametrize(
    "code", [code for code in grpc.StatusCode if code != grpc.StatusCode.OK], ids=lambda c: c.name
)
def test_status_classification_follows_the_otlp_spec(sink: OtlpSink, code: grpc.StatusCode) -> None:
    sink.fail_grpc(code, times=1, message="upstream says no")
    error = export_error(config_for(f"http://{sink.grpc_endpoint}"))
    assert isinstance(error, RetryableExportError if code in SPEC_RETRYABLE else PermanentExportError)
    assert error.retry_after is None
    assert code.name in str(error) and "upstream says no" in str(error)


def test_resource_exhausted_is_retryable_only_with_retry_info(sink: OtlpSink) -> None:
    config = config_for(f"http://{sink.grpc_endpoint}")
    sink.fail_grpc(grpc.StatusCode.RESOURCE_EXHAUSTED, times=1)
    assert isinstance(export_error(config), PermanentExportError)
    sink.fail_grpc(grpc.StatusCode.RESOURCE_EXHAUSTED, times=1, retry_after=2.5)
    error = export_error(config)
    assert isinstance(error, RetryableExportError)
    assert error.retry_after == 2.5


def test_retry_info_delay_surfaces_on_retryable_codes(sink: OtlpSink) -> None:
    sink.fail_grpc(grpc.StatusCode.UNAVAILABLE, times=1, retry_after=0.75)
    assert export_error(config_for(f"http://{sink.grpc_endpoint}")).retry_after == 0.75


def test_fault_applies_to_the_next_n_requests_only(sink: OtlpSink) -> None:
    config = config_for(f"http://{sink.grpc_endpoint}")
    payload = log_request(records=1).SerializeToString()
    sink.fail_grpc(grpc.StatusCode.UNAVAILABLE, times=2)
    for _ in range(2):
        assert isinstance(export_error(config, payload), RetryableExportError)
    assert asyncio.run(export_once(config, payload)) == ExportResult()
    assert sink.attempts("grpc") == 3 and sink.log_record_count == 1


def test_slow_upstream_hits_the_call_timeout(sink: OtlpSink) -> None:
    sink.set_delay(1.0)
    error = export_error(
        config_for(f"http://{sink.grpc_endpoint}", timeout="100ms"),
        log_request(records=1).SerializeToString(),
    )
    assert isinstance(error, RetryableExportError)
    assert "DEADLINE_EXCEEDED" in str(error)
    assert sink.attempts("grpc") == 1  # gRPC cancels the server's handler at the deadline: nothing late


def test_upstream_down_then_back_is_delivered_by_the_retry_loop(
    sink_thread: SinkThread, sink: OtlpSink
) -> None:
    sink_thread.stop()
    failures: list[ExportError] = []
    settings = RetrySettings(initial_interval=0.05, max_interval=0.5, max_elapsed=30)

    async def scenario() -> ExportResult:
        exporter = OtlpGrpcExporter(config_for(f"http://{sink.grpc_endpoint}", timeout=2))
        await exporter.start()
        try:
            payload = log_request(records=5).SerializeToString()
            delivery = asyncio.create_task(
                call_with_retry(
                    lambda: exporter.export(payload, 5),
                    settings,
                    stop=asyncio.Event(),
                    on_retry=lambda error, _delay: failures.append(error),
                )
            )
            await async_wait_until(
                lambda: len(failures) >= 2, what="two failed attempts while the sink is down"
            )
            await asyncio.to_thread(sink_thread.start)
            return await delivery
        finally:
            await exporter.shutdown()

    assert asyncio.run(scenario()) == ExportResult()
    assert all(isinstance(error, RetryableExportError) and "UNAVAILABLE" in str(error) for error in failures)
    assert sink.log_record_count == 5


# ---- TLS and endpoint rules ----


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_sink_thread(certificate: tuple[Path, Path]) -> Iterator[SinkThread]:
    with SinkThread(tls=certificate) as running:
        yield running


@pytest.fixture
def tls_sink(tls_sink_thread: SinkThread) -> OtlpSink:
    tls_sink_thread.sink.reset()
    return tls_sink_thread.sink


@pytest.mark.openssl
def test_https_endpoint_with_private_ca(tls_sink: OtlpSink, certificate: tuple[Path, Path]) -> None:
    port = tls_sink.grpc_endpoint.rpartition(":")[2]
    tls = {"ca_file": str(certificate[0])}
    for endpoint in (f"https://localhost:{port}", f"localhost:{port}"):  # a bare host:port means TLS
        asyncio.run(export_once(config_for(endpoint, tls=tls), log_request(records=1).SerializeToString()))
    assert tls_sink.log_record_count == 2


@pytest.mark.openssl
def test_plaintext_or_unknown_ca_cannot_reach_a_tls_upstream(
    tls_sink: OtlpSink, certificate: tuple[Path, Path]
) -> None:
    port = tls_sink.grpc_endpoint.rpartition(":")[2]
    for endpoint, tls in [
        (f"localhost:{port}", {"insecure": True}),
        (f"http://localhost:{port}", {"ca_file": str(certificate[0])}),  # the scheme wins over ca_file
        (f"https://localhost:{port}", {}),  # the system CAs do not know this certificate
    ]:
        error = export_error(config_for(endpoint, tls=tls, timeout=5))
        assert isinstance(error, RetryableExportError), endpoint
    assert tls_sink.log_record_count == 0


def test_tls_configuration_errors_are_clear(tmp_path: Path) -> None:
    missing = config_for("https://localhost:4317", tls={"ca_file": str(tmp_path / "nope.pem")})
    with pytest.raises(ConfigError, match=r"tls.ca_file .*nope.pem.*cannot read"):
        asyncio.run(export_once(missing, b""))
    skip_verify = config_for("https://localhost:4317", tls={"insecure_skip_verify": True})
    with pytest.raises(ConfigError, match="insecure_skip_verify is not supported for gRPC"):
        asyncio.run(export_once(skip_verify, b""))


@pytest.mark.parametrize(
    ("endpoint", "insecure", "expected"),
    [
        ("http://collector:4317", False, GrpcTarget("collector:4317", secure=False)),
        ("https://collector:4317", True, GrpcTarget("collector:4317", secure=True)),
        ("collector:4317", False, GrpcTarget("collector:4317", secure=True)),
        ("collector:4317", True, GrpcTarget("collector:4317", secure=False)),
        ("http://[::1]:4317/", False, GrpcTarget("[::1]:4317", secure=False)),
        ("https://collector", False, GrpcTarget("collector", secure=True)),
    ],
)
def test_endpoint_rules(endpoint: str, insecure: bool, expected: GrpcTarget) -> None:
    assert parse_endpoint(endpoint, ClientTLS(insecure=insecure)) == expected


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("ftp://collector:4317", "scheme must be http or https"),
        ("http://collector:4317/v1/logs", "no path"),
        ("http://user:secret@collector:4317", "credentials belong in headers"),
        ("collector:port", "is not host:port"),
        ("", "is not host:port"),
    ],
)
def test_bad_endpoints_are_config_errors(endpoint: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        parse_endpoint(endpoint, ClientTLS())
    assert "secret" not in str(caught.value)


def test_headers_that_cannot_be_metadata_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="cannot be sent as gRPC metadata"):
        OtlpGrpcExporter(config_for("http://127.0.0.1:1", headers={"grpc-timeout": "1S"}))
