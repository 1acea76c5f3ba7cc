"""End to end: the real OTel SDK exporters -> the proxy -> a real OTLP sink, over gRPC and HTTP."""

from __future__ import annotations

import gzip
import http.client
import subprocess
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from lipservice_proxy.sampling.annotate import PATTERN_ID, SAMPLE_RATE, TEMPLATE

from .support.proxy import ProxyThread, http_get, sink_exporter
from .support.sdk import emit, sdk_logger
from .support.sink import SinkThread
from .support.waiting import wait_until

KEEP_ALL = "version: 1\nseverity_rates: {TRACE: 1, DEBUG: 1, INFO: 1, WARN: 1}\n"


@pytest.fixture
def keep_all_policy(tmp_path: Path) -> Path:
    path = tmp_path / "keep-all.yaml"
    path.write_text(KEEP_ALL)
    return path


@pytest.fixture
def sink() -> Any:
    with SinkThread() as running:
        yield running


def attributes(record: Any) -> dict[str, Any]:
    result = {}
    for kv in record.attributes:
        kind = kv.value.WhichOneof("value")
        result[kv.key] = getattr(kv.value, kind) if kind else None
    return result


def sample_records(count: int) -> list[dict[str, Any]]:
    return [
        {
            "body": f"user {1000 + i} logged in from 10.0.{i % 7}.{i % 250}",
            "severity": ("INFO", "WARN", "DEBUG", "ERROR")[i % 4],
            "attributes": {"request.id": f"r-{i}", "attempt": i % 3, "ok": i % 2 == 0, "latency": i / 10},
            "trace_id": 0x0AF7651916CD43DD8448EB211C80319C + i,
            "span_id": 0x00F067AA0BA902B7 + i,
        }
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("protocol", "compress"), [("grpc", False), ("grpc", True), ("http", False), ("http", True)]
)
def test_sdk_records_arrive_intact(
    keep_all_policy: Path, sink: SinkThread, protocol: str, compress: bool
) -> None:
    # gzip out is checked over OTLP/HTTP, where the sink sees Content-Encoding (grpc-core hides grpc-encoding)
    exporter = (
        {"type": "otlp_http", "endpoint": sink.sink.http_url + "/v1/logs", "compression": "gzip"}
        if compress
        else sink_exporter(sink.sink.grpc_endpoint, compression="none")
    )
    config = {"sampler": {"policy_file": str(keep_all_policy)}, "exporters": [exporter]}
    sent = sample_records(300)
    with ProxyThread(config) as proxy:
        endpoint = proxy.grpc_endpoint if protocol == "grpc" else proxy.http_url
        with sdk_logger(endpoint, protocol=protocol, gzip=compress) as logger:
            emit(logger, sent)
        received = sink.wait_for_records(len(sent))
        assert (
            proxy.metric("lipservice_log_records_received_total", {"service": "checkout", "severity": "INFO"})
            == 75
        )

    assert len(received) == len(sent)
    by_request_id = {attributes(entry.record)["request.id"]: entry for entry in received}
    for index, spec in enumerate(sent):
        entry = by_request_id[f"r-{index}"]
        record = entry.record
        got = attributes(record)
        assert record.body.string_value == spec["body"]
        assert record.severity_text == spec["severity"]
        assert int.from_bytes(record.trace_id, "big") == spec["trace_id"]
        assert int.from_bytes(record.span_id, "big") == spec["span_id"]
        for key, value in spec["attributes"].items():
            assert got[key] == value
        assert got[SAMPLE_RATE] == 1.0
        assert len(got[PATTERN_ID]) == 16
        assert "<" in got[TEMPLATE]  # the variable parts are masked
        resource = {kv.key: kv.value.string_value for kv in entry.resource.attributes}
        assert resource["service.name"] == "checkout"
        assert entry.scope.name == "tests.sdk"
    if compress:
        assert all(r.headers.get("content-encoding") == "gzip" for r in sink.sink.requests("logs"))


def test_json_in_json_out_and_to_several_exporters(keep_all_policy: Path) -> None:
    with SinkThread() as first, SinkThread() as second:
        config = {
            "sampler": {"policy_file": str(keep_all_policy)},
            "exporters": [
                sink_exporter(first.sink.grpc_endpoint),
                {
                    "type": "otlp_http",
                    "endpoint": second.sink.http_url + "/v1/logs",
                    "encoding": "json",
                    "queue": {"batch": {"timeout": "10ms"}},
                },
            ],
        }
        body = {
            "resourceLogs": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
                    "scopeLogs": [
                        {
                            "scope": {"name": "json-client"},
                            "logRecords": [
                                {
                                    "timeUnixNano": "1700000000000000000",
                                    "severityNumber": 9,
                                    "body": {"stringValue": "cart 42 updated"},
                                    "traceId": "5b8efff798038103d269b633813fc60c",
                                    "spanId": "eee19b7ec3c1b174",
                                    "attributes": [{"key": "big", "value": {"intValue": "9007199254740993"}}],
                                    "someFutureField": {"ignored": True},
                                }
                            ],
                        }
                    ],
                }
            ]
        }
        with ProxyThread(config) as proxy:
            connection = http.client.HTTPConnection("127.0.0.1", proxy.running.ports["http"], timeout=10)
            connection.request("POST", "/v1/logs", orjson.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Type").startswith("application/json")
            assert orjson.loads(response.read()) == {}
            for running in (first, second):
                (entry,) = running.wait_for_records(1)
                assert entry.record.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
                assert attributes(entry.record)["big"] == 9007199254740993
                assert entry.record.time_unix_nano == 1700000000000000000


def post(
    url: str, body: bytes, headers: dict[str, str], chunked: bool = False
) -> tuple[int, dict[str, str], bytes]:
    host_port = url.removeprefix("http://")
    host, port = host_port.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    if chunked:
        connection.putrequest("POST", "/v1/logs")
        for key, value in {**headers, "Transfer-Encoding": "chunked"}.items():
            connection.putheader(key, value)
        connection.endheaders()
        for start in range(0, len(body), 1000):
            piece = body[start : start + 1000]
            connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        connection.send(b"0\r\n\r\n")
    else:
        connection.request("POST", "/v1/logs", body, headers)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def protobuf_request(count: int, body: str = "item {} shipped") -> bytes:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name").value.string_value = "shipping"
    records = resource_logs.scope_logs.add().log_records
    for i in range(count):
        record = records.add(severity_number=9)
        record.body.string_value = body.format(i)
    return request.SerializeToString()


def test_chunked_request_without_content_length(keep_all_policy: Path, sink: SinkThread) -> None:
    config = {
        "sampler": {"policy_file": str(keep_all_policy)},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }
    with ProxyThread(config) as proxy:
        payload = protobuf_request(200)
        status, headers, body = post(
            proxy.http_url, payload, {"Content-Type": "application/x-protobuf"}, chunked=True
        )
        assert status == 200, body
        assert headers["Content-Type"].startswith("application/x-protobuf")
        ExportLogsServiceResponse.FromString(body)
        assert len(sink.wait_for_records(200)) == 200


@pytest.mark.parametrize(
    ("content_type", "body", "encoding", "status", "message"),
    [
        ("application/x-protobuf", b"\xff\xff\xff", None, 400, "malformed protobuf"),
        ("application/json", b"{not json", None, 400, "invalid"),
        ("application/json", b'{"resourceLogs": "nope"}', None, 400, "resourceLogs"),
        ("text/plain", b"hello", None, 415, "unsupported Content-Type"),
        ("application/x-protobuf", b"not gzip at all", "gzip", 400, "invalid gzip body"),
        ("application/x-protobuf", b"", "br", 415, "unsupported Content-Encoding"),
    ],
)
def test_bad_http_requests_get_status_bodies(
    keep_all_policy: Path,
    content_type: str,
    body: bytes,
    encoding: str | None,
    status: int,
    message: str,
) -> None:
    config = {"sampler": {"policy_file": str(keep_all_policy)}, "exporters": [{"type": "debug"}]}
    with ProxyThread(config) as proxy:
        headers = {"Content-Type": content_type}
        if encoding:
            headers["Content-Encoding"] = encoding
        got_status, _, got_body = post(proxy.http_url, body, headers)
        assert got_status == status
        if content_type == "application/json":
            assert message in orjson.loads(got_body)["message"]
        else:
            assert message in status_pb2.Status.FromString(got_body).message
        assert (
            proxy.metric("lipservice_log_records_received_total", {"service": "shipping", "severity": "INFO"})
            == 0
        )


def test_size_limits_apply_after_decompression(keep_all_policy: Path) -> None:
    config = {
        "sampler": {"policy_file": str(keep_all_policy)},
        "receivers": {"http": {"max_request_body_mib": 1}, "grpc": {"max_recv_msg_size_mib": 1}},
        "exporters": [{"type": "debug"}],
    }
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KiB
    with ProxyThread(config) as proxy:
        status, _, body = post(
            proxy.http_url, bomb, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        )
        assert status == 413 and b"decompressed body exceeds" in body
        status, _, _ = post(
            proxy.http_url, b"\x00" * (2 * 1024 * 1024), {"Content-Type": "application/x-protobuf"}
        )
        assert status == 413
        channel = grpc.insecure_channel(proxy.grpc_endpoint)
        export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        with pytest.raises(grpc.RpcError) as error:
            export(protobuf_request(20_000, "x" * 100), timeout=10)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as error:
            export(b"\xff\xff\xff", timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert export(b"", timeout=10) == b""  # an empty request is a success
        channel.close()
        assert (
            proxy.metric("lipservice_receiver_requests_total", {"protocol": "http", "outcome": "too_large"})
            == 2
        )
        assert (
            proxy.metric("lipservice_receiver_requests_total", {"protocol": "grpc", "outcome": "invalid"})
            == 1
        )


def test_invalid_ids_are_rejected_as_partial_success(keep_all_policy: Path, sink: SinkThread) -> None:
    request = ExportLogsServiceRequest.FromString(protobuf_request(3))
    records = request.resource_logs[0].scope_logs[0].log_records
    records[1].trace_id = b"\x01" * 5
    config = {
        "sampler": {"policy_file": str(keep_all_policy)},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }
    with ProxyThread(config) as proxy:
        status, _, body = post(
            proxy.http_url, request.SerializeToString(), {"Content-Type": "application/x-protobuf"}
        )
        assert status == 200
        response = ExportLogsServiceResponse.FromString(body)
        assert response.partial_success.rejected_log_records == 1
        assert "trace_id" in response.partial_success.error_message
        received = sink.wait_for_records(2)
        assert sorted(e.record.body.string_value for e in received) == ["item 0 shipped", "item 2 shipped"]
        assert proxy.metric("lipservice_receiver_rejected_records_total", {"protocol": "http"}) == 1
        assert (
            proxy.metric("lipservice_receiver_requests_total", {"protocol": "http", "outcome": "partial"})
            == 1
        )


def test_traces_and_metrics_pass_through_byte_identical(sink: SinkThread, tmp_path: Path) -> None:
    from .support.otlp_samples import metrics_request, trace_request

    traces, metrics = trace_request().SerializeToString(), metrics_request().SerializeToString()
    endpoint = f"http://{sink.sink.grpc_endpoint}"
    config = {"passthrough": {"traces": endpoint, "metrics": endpoint}, "exporters": [{"type": "debug"}]}
    with ProxyThread(config) as proxy:
        channel = grpc.insecure_channel(proxy.grpc_endpoint)
        channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(traces, timeout=10)
        channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")(
            metrics, timeout=10
        )
        channel.close()
        for path, payload in (("/v1/traces", traces), ("/v1/metrics", metrics)):
            connection = http.client.HTTPConnection("127.0.0.1", proxy.running.ports["http"], timeout=10)
            connection.request("POST", path, payload, {"Content-Type": "application/x-protobuf"})
            assert connection.getresponse().status == 200
        wait_until(lambda: len(sink.sink.requests("traces")) == 2 and len(sink.sink.requests("metrics")) == 2)
    assert [r.body for r in sink.sink.requests("traces")] == [traces, traces]
    assert [r.body for r in sink.sink.requests("metrics")] == [metrics, metrics]


def test_traces_refused_clearly_without_passthrough(keep_all_policy: Path) -> None:
    with ProxyThread({"exporters": [{"type": "debug"}]}) as proxy:
        channel = grpc.insecure_channel(proxy.grpc_endpoint)
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(
                b"", timeout=10
            )
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        channel.close()
        connection = http.client.HTTPConnection("127.0.0.1", proxy.running.ports["http"], timeout=10)
        connection.request("POST", "/v1/traces", b"", {"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        assert response.status == 404
        assert b"passthrough.traces is not set" in response.read()


def test_admin_endpoints_and_promtool(keep_all_policy: Path, sink: SinkThread) -> None:
    config = {
        "sampler": {"policy_file": str(keep_all_policy)},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }
    with ProxyThread(config) as proxy:
        assert http_get(proxy.admin_url + "/healthz")[0] == 200
        assert http_get(proxy.admin_url + "/readyz")[0] == 200
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, sample_records(40))
        sink.wait_for_records(40)
        wait_until(
            lambda: (
                proxy.metric("lipservice_export_records_total", {"exporter": "otlp_grpc", "outcome": "sent"})
                == 40
            )
        )
        text = proxy.metrics_text()
        status, policy = http_get(proxy.admin_url + "/api/v1/policy")
        assert status == 200 and orjson.loads(policy)["current"]["version"] == 1
    for name in (
        "lipservice_log_records_received_total",
        "lipservice_log_records_kept_total",
        "lipservice_log_bytes_received_total",
        "lipservice_pattern_records_total",
        "lipservice_export_requests_total",
        "lipservice_export_records_total",
        "lipservice_export_queue_records",
        "lipservice_export_latency_seconds_bucket",
        "lipservice_receiver_requests_total",
        "lipservice_policy_version",
        "lipservice_patterns_active",
    ):
        assert f"\n{name}" in text, name
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
