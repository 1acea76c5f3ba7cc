"""OTLP/JSON codec: round trips, agreement with protobuf's json_format and the OTel SDK's JSON encoder,
OTLP's differences (hex ids, integer enums, int64 strings), and clear errors for bad input."""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from lipservice_proxy.errors import BadRequest
from lipservice_proxy.otlp.json_codec import MAX_NESTING, json_to_message, message_to_json
from tests.support.otlp_samples import any_value, log_request, metrics_request, trace_request

SAMPLES = {
    "logs": lambda: log_request("HDFS", 300),
    "logs-openssh": lambda: log_request("OpenSSH", 120, services=2, seed=3),
    "traces": trace_request,
    "metrics": metrics_request,
}
ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def same(left: Message, right: Message) -> bool:
    """Equality that also holds for NaN values (protobuf's == follows float semantics)."""
    return left.SerializeToString(deterministic=True) == right.SerializeToString(deterministic=True)


def base64_ids_to_hex(tree: Any) -> Any:
    """json_format's tree with OTLP's one difference applied: ids in hex instead of base64."""
    if isinstance(tree, list):
        return [base64_ids_to_hex(item) for item in tree]
    if isinstance(tree, dict):
        return {
            key: base64.b64decode(value).hex() if key in ID_KEYS else base64_ids_to_hex(value)
            for key, value in tree.items()
        }
    return tree


def log_json(record: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})


def only_record(request: ExportLogsServiceRequest) -> LogRecord:
    return request.resource_logs[0].scope_logs[0].log_records[0]


# ---- round trips and agreement with other encoders ----


@pytest.mark.parametrize("name", SAMPLES)
def test_round_trip_is_exact(name: str) -> None:
    message = SAMPLES[name]()
    assert same(json_to_message(message_to_json(message), type(message)), message)


@pytest.mark.parametrize("name", SAMPLES)
def test_output_equals_json_format_with_hex_ids(name: str) -> None:
    message = SAMPLES[name]()
    expected = base64_ids_to_hex(json_format.MessageToDict(message, use_integers_for_enums=True))
    assert orjson.loads(message_to_json(message)) == expected


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("proto_names", [False, True], ids=["camelCase", "snake_case"])
def test_reads_json_format_output_with_enum_names(name: str, proto_names: bool) -> None:
    message = SAMPLES[name]()
    tree = json_format.MessageToDict(message, preserving_proto_field_name=proto_names)
    tree = base64_ids_to_hex(tree) if not proto_names else _snake_ids_to_hex(tree)
    assert same(json_to_message(orjson.dumps(tree), type(message)), message)


def _snake_ids_to_hex(tree: Any) -> Any:
    if isinstance(tree, list):
        return [_snake_ids_to_hex(item) for item in tree]
    if isinstance(tree, dict):
        snake_ids = {"trace_id", "span_id", "parent_span_id"}
        return {
            key: base64.b64decode(value).hex() if key in snake_ids else _snake_ids_to_hex(value)
            for key, value in tree.items()
        }
    return tree


def test_agrees_with_the_opentelemetry_sdk_json_encoder() -> None:
    json_encoder = pytest.importorskip("opentelemetry.exporter.otlp.json.common._log_encoder")
    from opentelemetry import trace
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as encode_protobuf
    from opentelemetry.proto_json.collector.logs.v1.logs_service import (
        ExportLogsServiceRequest as SdkJsonRequest,
    )
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource({"service.name": "checkout", "replicas": 3}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("payments", "2.0")
    span = trace.NonRecordingSpan(
        trace.SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, trace.TraceFlags(1))
    )
    logger.emit(
        timestamp=1_732_000_000_123_456_789,
        observed_timestamp=1_732_000_000_223_456_789,
        context=trace.set_span_in_context(span),
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        body="card declined for order 1234",
        attributes={"order.id": 1234, "amount": 12.5, "retry": False, "tags": ["a", "b"], "big": -(2**63)},
    )
    logger.emit(timestamp=1_732_000_000_000_000_001, body={"event": "refund", "lines": [1, 2.5, "x"]})
    batch = memory.get_finished_logs()
    assert len(batch) == 2

    sdk_json = json_encoder.encode_logs(batch).to_json()
    assert same(json_to_message(sdk_json, ExportLogsServiceRequest), encode_protobuf(batch))
    ours = message_to_json(encode_protobuf(batch))
    assert SdkJsonRequest.from_json(ours).to_dict() == json_encoder.encode_logs(batch).to_dict()
    provider.shutdown()


@pytest.mark.parametrize(
    ("response_type", "field"),
    [
        (ExportLogsServiceResponse, "rejectedLogRecords"),
        (ExportTraceServiceResponse, "rejectedSpans"),
        (ExportMetricsServiceResponse, "rejectedDataPoints"),
    ],
)
def test_response_messages_with_partial_success(response_type: type[Message], field: str) -> None:
    text = orjson.dumps({"partialSuccess": {field: "3", "errorMessage": "3 items had no timestamp"}})
    response = json_to_message(text, response_type)
    assert orjson.loads(message_to_json(response)) == orjson.loads(text)
    assert json_to_message(b"{}", response_type) == response_type()


any_values = st.recursive(
    st.one_of(
        st.text(max_size=20),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=True),
        st.just(math.nan),  # JSON has one NaN: NaNs with other payload bits cannot round-trip
        st.binary(max_size=16),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(value=any_values)
def test_any_value_round_trips(value: object) -> None:
    message = AnyValue() if value == [] or value == {} else any_value(value)
    assert same(json_to_message(message_to_json(message), AnyValue), message)


# ---- OTLP's JSON rules ----


def test_output_follows_the_otlp_json_rules() -> None:
    record = LogRecord(
        time_unix_nano=1_732_000_000_000_000_001,
        severity_number=17,
        trace_id=bytes.fromhex("5b8efff798038103d269b633813fc60c"),
        span_id=bytes.fromhex("eee19b7ec3c1b174"),
        body=AnyValue(bytes_value=b"\x00\xff"),
        attributes=[
            {"key": "n", "value": {"int_value": -5}},
            {"key": "zero", "value": {"int_value": 0}},
            {"key": "ratio", "value": {"double_value": math.nan}},
        ],
    )
    assert orjson.loads(message_to_json(record)) == {
        "timeUnixNano": "1732000000000000001",
        "severityNumber": 17,
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "body": {"bytesValue": "AP8="},
        "attributes": [
            {"key": "n", "value": {"intValue": "-5"}},
            {"key": "zero", "value": {"intValue": "0"}},
            {"key": "ratio", "value": {"doubleValue": "NaN"}},
        ],
    }


def test_input_leniency_of_protobuf_json() -> None:
    text = log_json(
        {
            "time_unix_nano": 1_732_000_000_000_000_001,  # snake_case key, number instead of string
            "observedTimeUnixNano": 1.0e9,  # an integral float is an integer
            "severityNumber": "SEVERITY_NUMBER_ERROR",  # enum by name
            "traceId": "",  # empty id means unset
            "futureField": {"anything": [1, 2]},  # unknown keys are ignored
            "severityText": None,  # null means default
            "body": {"bytesValue": "_-8"},  # URL-safe base64 without padding
            "attributes": [{"key": "inf", "value": {"doubleValue": "-Infinity"}}],
        }
    )
    record = only_record(json_to_message(text, ExportLogsServiceRequest))
    assert record.time_unix_nano == 1_732_000_000_000_000_001
    assert record.observed_time_unix_nano == 1_000_000_000
    assert record.severity_number == 17
    assert record.trace_id == b""
    assert record.severity_text == ""
    assert record.body.bytes_value == b"\xff\xef"
    assert record.attributes[0].value.double_value == -math.inf


def test_empty_body_is_an_empty_request() -> None:
    assert json_to_message(b"", ExportLogsServiceRequest) == ExportLogsServiceRequest()
    assert json_to_message(b" \n", ExportLogsServiceRequest) == ExportLogsServiceRequest()


def test_span_kind_names_and_zero_valued_optional_fields() -> None:
    text = orjson.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {"spans": [{"kind": "SPAN_KIND_SERVER", "parentSpanId": "00f067aa0ba902b7"}]}
                    ]
                }
            ]
        }
    )
    span = json_to_message(text, ExportTraceServiceRequest).resource_spans[0].scope_spans[0].spans[0]
    assert span.kind == 2
    assert span.parent_span_id == bytes.fromhex("00f067aa0ba902b7")
    metrics = metrics_request()
    point = json_to_message(message_to_json(metrics), ExportMetricsServiceRequest)
    histogram_point = point.resource_metrics[0].scope_metrics[0].metrics[3].histogram.data_points[0]
    assert histogram_point.HasField("sum") and histogram_point.sum == 0.0


# ---- bad input: BadRequest saying what and where ----

RECORD_PATH = "resourceLogs[0].scopeLogs[0].logRecords[0]"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{", "invalid JSON"),
        (b'{"resourceLogs": "\xff"}', "invalid JSON"),
        (b'{"resourceLogs": [{"resource": {"attributes": [{"key": "\\ud800"}]}}]}', "invalid JSON"),
        (b"[]", "ExportLogsServiceRequest: expected an object, got an array"),
        (b'{"resourceLogs": "many"}', "at resourceLogs: expected an array, got the string 'many'"),
        (b'{"resourceLogs": [{"scopeLogs": [7]}]}', "at resourceLogs[0].scopeLogs[0]: expected an object"),
        (log_json({"traceId": "zz" * 16}), f"at {RECORD_PATH}.traceId: 'zzzz"),
        (
            log_json({"traceId": "5b8e"}),
            f"at {RECORD_PATH}.traceId: expected 32 hex digits (16 bytes), got 4",
        ),
        (
            log_json({"spanId": "5b8efff798038103d269b633813fc60c"}),
            f"{RECORD_PATH}.spanId: expected 16 hex digits",
        ),
        (log_json({"traceId": "W47/95gDgQPSabYzgT/GDA=="}), f"{RECORD_PATH}.traceId: expected 32 hex digits"),
        (log_json({"spanId": 12}), "spanId: expected a hex string, got the number 12"),
        (log_json({"timeUnixNano": "12x"}), f"{RECORD_PATH}.timeUnixNano: expected an integer"),
        (log_json({"timeUnixNano": -1}), "timeUnixNano: -1 is out of range"),
        (log_json({"timeUnixNano": 1.5}), "timeUnixNano: expected an integer, got the number 1.5"),
        (log_json({"timeUnixNano": True}), "timeUnixNano: expected an integer, got true"),
        (log_json({"flags": 2**32}), "flags: 4294967296 is out of range"),
        (log_json({"severityNumber": "LOUD"}), "severityNumber: expected a SeverityNumber number or name"),
        (log_json({"severityText": 3}), "severityText: expected a string, got the number 3"),
        (log_json({"body": "hello"}), f"{RECORD_PATH}.body: expected an object, got the string 'hello'"),
        (log_json({"body": {"stringValue": 5}}), "body.stringValue: expected a string"),
        (log_json({"body": {"boolValue": "true"}}), "body.boolValue: expected true or false"),
        (log_json({"body": {"intValue": str(2**63)}}), "body.intValue: 9223372036854775808 is out of range"),
        (log_json({"body": {"doubleValue": "fast"}}), "body.doubleValue: expected a number"),
        (log_json({"body": {"bytesValue": "***"}}), "body.bytesValue: '***' is not base64"),
        (
            log_json({"body": {"stringValue": "a", "intValue": 1}}),
            "body: string_value and int_value are both set",
        ),
        (log_json({"attributes": {"k": "v"}}), f"{RECORD_PATH}.attributes: expected an array, got an object"),
        (
            log_json(
                {"attributes": [{"key": "ok"}, {"key": "bad", "value": {"arrayValue": {"values": [1]}}}]}
            ),
            f"{RECORD_PATH}.attributes[1].value.arrayValue.values[0]: expected an object",
        ),
    ],
)
def test_bad_input_names_the_problem_and_the_field(body: bytes, expected: str) -> None:
    with pytest.raises(BadRequest) as caught:
        json_to_message(body, ExportLogsServiceRequest)
    assert expected in str(caught.value)


def test_nesting_is_bounded() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(MAX_NESTING // 2):  # each wrap is two messages (AnyValue, ArrayValue)
        value = {"arrayValue": {"values": [value]}}
    with pytest.raises(BadRequest, match=f"nested deeper than {MAX_NESTING} messages"):
        json_to_message(log_json({"body": value}), ExportLogsServiceRequest)
    shallow: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(20):
        shallow = {"arrayValue": {"values": [shallow]}}
    decoded = json_to_message(log_json({"body": shallow}), ExportLogsServiceRequest)
    assert ExportLogsServiceRequest.FromString(decoded.SerializeToString()) == decoded


def test_absurd_json_depth_is_a_bad_request_not_a_crash() -> None:
    with pytest.raises(BadRequest, match="invalid JSON"):
        json_to_message(b'{"resourceLogs": ' + b"[" * 5000 + b"]" * 5000 + b"}", ExportLogsServiceRequest)
