"""OTLP/HTTP exporter against the real sink: protobuf and JSON, gzip on the wire, headers, partial
success, the OTLP status rules, Retry-After in both forms, connection failures, TLS."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.config import ClientTLS, OtlpHttpExporterConfig
from lipservice_proxy.errors import PermanentExportError, RetryableExportError
from lipservice_proxy.exporters.base import ExportResult
from lipservice_proxy.exporters.otlp_http import OtlpHttpExporter, describe_error_body, parse_retry_after
from lipservice_proxy.otlp.json_codec import json_to_message
from tests.support.certs import self_signed_certificate
from tests.support.exporting import export_error, export_once
from tests.support.leaks import no_resource_leaks  # noqa: F401 - a fixture
from tests.support.otlp_samples import log_request
from tests.support.sink import OtlpSink, SinkThread
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("no_resource_leaks")

SPEC_RETRYABLE = {429, 502, 503, 504}  # the OTLP specification's list, written out to test the code


@pytest.fixture(scope="module")
def sink_thread() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


@pytest.fixture
def sink(sink_thread: SinkThread) -> OtlpSink:
    sink_thread.sink.reset()
    return sink_thread.sink


def config_for(url: str, **overrides: Any) -> OtlpHttpExporterConfig:
    return OtlpHttpExporterConfig.model_validate({"type": "otlp_http", "endpoint": url, **overrides})


def test_protobuf_with_gzip_and_headers(sink: OtlpSink) -> None:
    request = log_request("HDFS", 400)
    payload = request.SerializeToString()
    config = config_for(
        f"{sink.http_url}/v1/logs", headers={"X-Tenant": "blue", "content-type": "text/plain"}
    )
    assert asyncio.run(export_once(config, payload, 400)) == ExportResult()
    [received] = sink.requests("logs")
    assert received.content_type == "application/x-protobuf"  # a configured Content-Type cannot win
    assert received.headers["content-encoding"] == "gzip"
    assert gzip.decompress(received.wire_body) == payload
    assert len(received.wire_body) < len(payload) / 2
    assert received.headers["x-tenant"] == "blue"
    assert received.headers["user-agent"].startswith("lipservice-proxy/")
    assert received.message == request


def test_json_encoding_without_compression(sink: OtlpSink) -> None:
    first, second = log_request("OpenSSH", 50, seed=4), log_request("HDFS", 10, seed=5)
    config = config_for(f"{sink.http_url}/v1/logs", encoding="json", compression="none")
    asyncio.run(export_once(config, first.SerializeToString() + second.SerializeToString(), 60))
    [received] = sink.requests("logs")
    assert received.content_type == "application/json"
    assert "content-encoding" not in received.headers
    merged = ExportLogsServiceRequest()
    merged.MergeFrom(first)
    merged.MergeFrom(second)
    assert json_to_message(received.wire_body, ExportLogsServiceRequest) == merged
    assert orjson.loads(received.wire_body)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["traceId"]


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_partial_success_is_read_in_either_encoding(sink: OtlpSink, encoding: str) -> None:
    sink.set_partial_success(3, "3 records too old")
    config = config_for(f"{sink.http_url}/v1/logs", encoding=encoding)
    result = asyncio.run(export_once(config, log_request(records=10).SerializeToString(), 10))
    assert result == ExportResult(rejected_records=3, message="3 records too old")


@pytest.mark.parametrize("status", [307, 400, 401, 403, 404, 408, 413, 415, 429, 500, 501, 502, 503, 504])
def test_status_classification_follows_the_otlp_spec(sink: OtlpSink, status: int) -> None:
    sink.fail_http(status, times=1, message="upstream status text")
    error = export_error(config_for(f"{sink.http_url}/v1/logs"), log_request(records=1).SerializeToString())
    assert isinstance(error, RetryableExportError if status in SPEC_RETRYABLE else PermanentExportError)
    assert f"HTTP {status}" in str(error)
    assert "upstream status text" in str(error)  # from the google.rpc.Status body


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_bad_request_body_status_message_is_in_the_error(sink: OtlpSink, encoding: str) -> None:
    sink.fail_http(400, times=1, message="field timeUnixNano is bad")
    error = export_error(
        config_for(f"{sink.http_url}/v1/logs", encoding=encoding), log_request(records=1).SerializeToString()
    )
    assert isinstance(error, PermanentExportError)
    assert str(error) == "HTTP 400 Bad Request: field timeUnixNano is bad"


def test_retry_after_seconds_and_http_date(sink: OtlpSink) -> None:
    config = config_for(f"{sink.http_url}/v1/logs")
    payload = log_request(records=1).SerializeToString()
    sink.fail_http(503, times=1, retry_after=7)
    assert export_error(config, payload).retry_after == 7.0
    sink.fail_http(429, times=1, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    retry_after = export_error(config, payload).retry_after
    assert retry_after is not None and 25 <= retry_after <= 30


def test_unreachable_and_slow_upstreams_are_retryable(sink_thread: SinkThread, sink: OtlpSink) -> None:
    payload = log_request(records=1).SerializeToString()
    sink.set_delay(2.0)
    slow = export_error(config_for(f"{sink.http_url}/v1/logs", timeout="200ms"), payload)
    assert isinstance(slow, RetryableExportError) and "no answer within 0.2s" in str(slow)
    # aiohttp lets the handler finish after the client left: wait for it, so it cannot leak into later tests
    wait_until(lambda: sink.log_record_count == 1, what="the slow request to complete at the sink")
    sink_thread.stop()
    try:
        refused = export_error(config_for(f"{sink.http_url}/v1/logs"), payload)
    finally:
        sink_thread.start()
    assert isinstance(refused, RetryableExportError) and "connection failed" in str(refused)
    assert asyncio.run(export_once(config_for(f"{sink.http_url}/v1/logs"), payload)) == ExportResult()


@pytest.mark.openssl
def test_https_with_private_ca_or_skip_verify(tmp_path_factory: pytest.TempPathFactory) -> None:
    certificate = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    payload = log_request(records=1).SerializeToString()
    with SinkThread(tls=certificate) as running:
        url = running.sink.http_url.replace("127.0.0.1", "localhost") + "/v1/logs"
        asyncio.run(export_once(config_for(url, tls={"ca_file": str(certificate[0])}), payload))
        asyncio.run(export_once(config_for(url, tls={"insecure_skip_verify": True}), payload))
        unknown = export_error(config_for(url), payload)
        assert running.sink.log_record_count == 2
    assert isinstance(unknown, RetryableExportError) and "certificate" in str(unknown).lower()


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("soon", None), ("120", 120.0), ("1.5", 1.5), ("-3", 0.0), ("inf", None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_dates() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now=now) == 90.0
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37", now=now) is None  # no zone: not an HTTP-date


def test_error_body_description() -> None:
    assert describe_error_body(b'{"message": "quota"}', "application/json; charset=utf-8") == "quota"
    assert describe_error_body(b"upstream is \xff sad", "text/plain") == "upstream is \ufffd sad"
    assert describe_error_body(b"", None) == "empty body"
    assert describe_error_body(b"x" * 1000, "text/html").endswith("...")


def test_plain_http_ignores_tls_settings() -> None:
    exporter = OtlpHttpExporter(
        "h", url="http://127.0.0.1:1/v1/logs", tls=ClientTLS(ca_file=Path("/nonexistent"))
    )

    async def scenario() -> None:
        await exporter.start()
        await exporter.shutdown()

    asyncio.run(scenario())
