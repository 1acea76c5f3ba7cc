"""Interop with the real OpenTelemetry Collector (tools/otelcol/manifest.yaml), both ways round.

As a client: the Collector's filelog receiver reads a file and its otlp_grpc / otlp_http (protobuf and
JSON, gzip) exporters send it into the proxy. As an upstream: the proxy's otlp_grpc and otlp_http
exporters and its traces/metrics passthrough send into the Collector's otlp receiver, whose file exporter
writes what it got. In both, every record, attribute and `lipservice.*` annotation must arrive intact.
The proxy runs in dry-run mode so that every record is forwarded and carries its annotations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from lipservice_proxy.otlp.json_codec import json_to_message

from .support.otelcol import OtelcolProcess, free_port, otlp_receivers, quiet_service
from .support.otlp_samples import log_request, loghub_lines, metrics_request, trace_request
from .support.proxy import ProxyThread, sink_exporter
from .support.sink import SinkThread
from .support.waiting import wait_until

pytestmark = pytest.mark.otelcol

PATTERN_ID = re.compile(r"^[0-9a-f]{16}$")
UNICODE_LINES = [
    "Zahlung für Bestellung 4411 bestätigt ✓",
    "ユーザー 42 がログインしました",
    "payment failed: carte refusée 🚫 (code 51)",
    'tab\tseparated\tvalue 7 and a \\ backslash and "quotes"',
]


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def attributes(record: Any) -> dict[str, Any]:
    return {kv.key: plain(kv.value) for kv in record.attributes}


def assert_annotated(attrs: dict[str, Any]) -> None:
    assert PATTERN_ID.match(attrs["lipservice.pattern_id"]), attrs
    assert attrs["log.record.template"], attrs
    assert isinstance(attrs["lipservice.sample_rate"], float), attrs


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


# ---- the Collector as a client of the proxy ----


def collector_exporter(kind: str, proxy: ProxyThread) -> tuple[str, dict[str, Any]]:
    if kind == "grpc":
        return "otlp_grpc", {"endpoint": proxy.grpc_endpoint, "tls": {"insecure": True}}
    encoding = {"http-protobuf": "proto", "http-json": "json"}[kind]
    return "otlp_http", {"endpoint": proxy.http_url, "encoding": encoding, "compression": "gzip"}


@pytest.mark.parametrize("kind", ["grpc", "http-protobuf", "http-json"])
def test_collector_filelog_into_the_proxy(kind: str, sink: SinkThread, tmp_path: Path) -> None:
    lines = [line.content for system in ("OpenSSH", "Hadoop") for line in loghub_lines(system)[:300]]
    lines += UNICODE_LINES
    log_file = tmp_path / "app.log"
    log_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {"sampler": {"dry_run": True}, "exporters": [sink_exporter(sink.sink.grpc_endpoint)]}
    with ProxyThread(config) as proxy:
        exporter, settings = collector_exporter(kind, proxy)
        collector_config = {
            "receivers": {"file_log": {"include": [str(log_file)], "start_at": "beginning"}},
            "exporters": {exporter: settings},
            "service": quiet_service({"logs": {"receivers": ["file_log"], "exporters": [exporter]}}),
        }
        with OtelcolProcess(collector_config, tmp_path):
            received = sink.wait_for_records(len(lines), timeout=60)
    assert sorted(entry.record.body.string_value for entry in received) == sorted(lines)
    for entry in received:
        attrs = attributes(entry.record)
        assert attrs["log.file.name"] == "app.log"
        assert_annotated(attrs)


# ---- the Collector as the proxy's upstream ----


def without_empty_messages(message: Message) -> Message:
    """`message` with every empty sub-message unset: OTLP reads an empty message as an absent one, and
    the Collector writes some (a span's `status {}`, a histogram's `negative {}`) that were never sent."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.is_repeated:
            if not field.message_type.GetOptions().map_entry:
                for item in value:
                    without_empty_messages(item)
        elif value.ByteSize() == 0:
            message.ClearField(field.name)
        else:
            without_empty_messages(value)
    return message


def read_file_export(path: Path, message_type: type[Message]) -> list[Any]:
    if not path.exists():
        return []
    return [
        without_empty_messages(json_to_message(line, message_type))
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


def proxy_exporter(kind: str, grpc_port: int, http_port: int) -> dict[str, Any]:
    if kind == "grpc":
        return {"type": "otlp_grpc", "endpoint": f"http://127.0.0.1:{grpc_port}"}
    encoding = {"http-protobuf": "protobuf", "http-json": "json"}[kind]
    return {"type": "otlp_http", "endpoint": f"http://127.0.0.1:{http_port}/v1/logs", "encoding": encoding}


def file_exporters(tmp_path: Path) -> dict[str, Any]:
    return {
        f"file/{signal}": {"path": str(tmp_path / f"{signal}.jsonl")}
        for signal in ("logs", "traces", "metrics")
    }


@pytest.mark.parametrize("kind", ["grpc", "http-protobuf", "http-json"])
def test_proxy_exports_into_the_collector(kind: str, tmp_path: Path) -> None:
    grpc_port, http_port = free_port(), free_port()
    collector_config = {
        "receivers": otlp_receivers(grpc_port, http_port),
        "exporters": file_exporters(tmp_path),
        "service": quiet_service(
            {
                signal: {"receivers": ["otlp"], "exporters": [f"file/{signal}"]}
                for signal in ("logs", "traces", "metrics")
            }
        ),
    }
    sent = log_request("HDFS", 400, services=2)
    traces, metrics = trace_request(), metrics_request()
    upstream = f"http://127.0.0.1:{grpc_port}"
    config = {
        "sampler": {"dry_run": True},
        "exporters": [
            {**proxy_exporter(kind, grpc_port, http_port), "queue": {"batch": {"timeout": "10ms"}}}
        ],
        "passthrough": {"traces": upstream, "metrics": upstream},
    }
    with OtelcolProcess(collector_config, tmp_path) as collector, ProxyThread(config) as proxy:
        channel = grpc.insecure_channel(proxy.grpc_endpoint)
        for service, request in (
            ("logs.v1.LogsService", sent),
            ("trace.v1.TraceService", traces),
            ("metrics.v1.MetricsService", metrics),
        ):
            channel.unary_unary(f"/opentelemetry.proto.collector.{service}/Export")(
                request.SerializeToString(), timeout=10
            )
        channel.close()
        wait_until(
            lambda: (
                proxy.metric(
                    "lipservice_export_records_total",
                    {"exporter": proxy_exporter(kind, 0, 0)["type"], "outcome": "sent"},
                )
                >= 400
            ),
            30,
            what="the proxy's export of 400 records",
        )
        assert collector.stop() == 0  # the file exporter flushes on shutdown
    logs = read_file_export(tmp_path / "logs.jsonl", ExportLogsServiceRequest)
    got = {
        (record.time_unix_nano, record.body.string_value): (resource_logs.resource, record)
        for request in logs
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    }
    expected = [
        (resource_logs.resource, record)
        for resource_logs in sent.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]
    assert len(got) == len(expected) == 400
    for resource, record in expected:
        got_resource, got_record = got[(record.time_unix_nano, record.body.string_value)]
        assert got_resource.attributes == resource.attributes
        got_attrs = attributes(got_record)
        assert_annotated(got_attrs)
        assert {
            key: value
            for key, value in got_attrs.items()
            if not key.startswith(("lipservice.", "log.record."))
        } == attributes(record)
        assert (
            got_record.trace_id,
            got_record.span_id,
            got_record.severity_number,
            got_record.severity_text,
        ) == (
            record.trace_id,
            record.span_id,
            record.severity_number,
            record.severity_text,
        )
    assert read_file_export(tmp_path / "traces.jsonl", ExportTraceServiceRequest) == [
        without_empty_messages(traces)
    ]
    got_metrics = read_file_export(tmp_path / "metrics.jsonl", ExportMetricsServiceRequest)
    assert len(got_metrics) == 1
    # NaN never equals itself: compare the text forms, where it is "nan" on both sides
    assert str(got_metrics[0]) == str(without_empty_messages(metrics))
