"""Per-record limits (`receivers.limits`): a record over any of them is rejected with OTLP partial
success and counted, the others of its request go through; over gRPC, OTLP/HTTP protobuf and JSON,
against a real proxy and a real upstream sink."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from fuzz import payloads
from lipservice_proxy.config import RecordLimits
from lipservice_proxy.otlp.json_codec import json_to_message, message_to_json
from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.sampling.sampler import Sampler

from .support.proxy import ProxyThread, sink_exporter
from .support.sink import SinkThread
from .support.waiting import wait_until

LIMITS = {"max_attributes_per_record": 100, "max_attribute_value_bytes": 1024, "max_body_bytes": 4096}
KEEP_ALL = "version: 1\nseverity_rates: {TRACE: 1, DEBUG: 1, INFO: 1, WARN: 1}\n"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def record(body: str, attributes: int = 2, value: str = "v") -> LogRecord:
    built = LogRecord(severity_number=9)
    built.body.string_value = body
    for index in range(attributes):
        built.attributes.add(key=f"attribute.{index}").value.string_value = value
    return built


def mixed_request() -> ExportLogsServiceRequest:
    """Two ordinary records around three over the test's limits, one limit each; at the limits is fine."""
    return payloads.request_of(
        record("ordinary 1"),
        record("too many attributes", attributes=101),
        record("x" * 5000),  # the body's AnyValue is over 4096 bytes
        record("an attribute value too large", value="y" * 1100),
        record("exactly at the attribute count", attributes=100),
        record("ordinary 2", value="z" * 900),
    )


KEPT = {"ordinary 1", "exactly at the attribute count", "ordinary 2"}


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


@pytest.fixture(scope="module")
def proxy(sink: SinkThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    policy = tmp_path_factory.mktemp("limits") / "policy.yaml"
    policy.write_text(KEEP_ALL)
    config = {
        "receivers": {"limits": LIMITS},
        "sampler": {"policy_file": str(policy)},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
    }
    with ProxyThread(config) as running:
        yield running


def send_grpc(proxy: ProxyThread, body: bytes) -> ExportLogsServiceResponse:
    with grpc.insecure_channel(proxy.grpc_endpoint) as channel:
        export = channel.unary_unary(LOGS_METHOD)
        return ExportLogsServiceResponse.FromString(export(body, timeout=10))


def send_http(proxy: ProxyThread, body: bytes, content_type: str) -> ExportLogsServiceResponse:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.running.ports["http"], timeout=10)
    try:
        connection.request("POST", "/v1/logs", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        answer = response.read()
        assert response.status == 200, answer
    finally:
        connection.close()
    if content_type == "application/json":
        return json_to_message(answer, ExportLogsServiceResponse)
    return ExportLogsServiceResponse.FromString(answer)


SENDERS: dict[
    str, tuple[str, Callable[[ProxyThread, ExportLogsServiceRequest], ExportLogsServiceResponse]]
] = {
    "grpc": ("grpc", lambda proxy, request: send_grpc(proxy, request.SerializeToString())),
    "http protobuf": (
        "http",
        lambda proxy, request: send_http(proxy, request.SerializeToString(), "application/x-protobuf"),
    ),
    "http json": (
        "http",
        lambda proxy, request: send_http(proxy, message_to_json(request), "application/json"),
    ),
}


@pytest.mark.parametrize("sender", list(SENDERS))
def test_records_over_the_limits_are_rejected_with_partial_success(
    proxy: ProxyThread, sink: SinkThread, sender: str
) -> None:
    protocol, send = SENDERS[sender]
    sink.sink.reset()
    rejected_before = proxy.metric("lipservice_receiver_rejected_records_total", {"protocol": protocol})
    response = send(proxy, mixed_request())
    assert response.partial_success.rejected_log_records == 3
    assert "receivers.limits" in response.partial_success.error_message
    assert "at most 100 attributes" in response.partial_success.error_message
    received = wait_until(lambda: len(sink.sink.log_records()) >= 3 and sink.sink.log_records())
    assert {entry.record.body.string_value for entry in received} == KEPT
    rejected = proxy.metric("lipservice_receiver_rejected_records_total", {"protocol": protocol})
    assert rejected - rejected_before == 3
    partial = proxy.metric("lipservice_receiver_requests_total", {"protocol": protocol, "outcome": "partial"})
    assert partial >= 1


def test_a_record_with_100k_attributes_is_rejected_at_the_default_limits() -> None:
    sampler = Sampler(PatternEngine(), Policy())  # the config's defaults
    request = payloads.many_attributes(100_000)
    raw = request.SerializeToString()
    outcome = sampler.process(request, raw, 0.0, len(raw))
    assert outcome.rejected == 1 and outcome.forwarded == 0
    assert "at most 1024 attributes" in outcome.rejection_message


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_protobuf_and_json_requests_are_judged_alike(encoding: str) -> None:
    """Protobuf requests are screened by each record's wire size, JSON ones by measuring each record:
    both find the same records over the limits."""
    sampler = Sampler(PatternEngine(), Policy(), limits=RecordLimits(**LIMITS))
    request = mixed_request()
    raw: Any = request.SerializeToString() if encoding == "protobuf" else message_to_json(request)
    outcome = sampler.process(request, raw, 0.0, len(raw) if encoding == "protobuf" else None)
    assert outcome.rejected == 3
    kept = {r.body.string_value for r in request.resource_logs[0].scope_logs[0].log_records}
    assert kept <= KEPT
