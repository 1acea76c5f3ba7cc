"""Hostile and ordinary OTLP payloads: seeds for the fuzzers and the cases of the receiver tests.

Everything is built in memory from parameters, so a test can ask for "100k attributes" or "a 1 GiB
gzip bomb" without a fixture file (the bomb is compressed in chunks: it never exists inflated).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from lipservice_proxy.otlp.json_codec import message_to_json


def request_of(*records: LogRecord, service: str = "fuzz") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name").value.string_value = service
    resource_logs.scope_logs.add().log_records.extend(records)
    return request


def ordinary_request() -> ExportLogsServiceRequest:
    """Every AnyValue kind, ids, severities: the shape a real SDK sends."""
    records = []
    for index, severity in enumerate((1, 5, 9, 13, 17, 21)):
        record = LogRecord(
            time_unix_nano=1_700_000_000_000_000_000 + index,
            severity_number=severity,  # type: ignore[arg-type]
            severity_text="INFO",
            body=AnyValue(string_value=f"user {index} logged in from 10.0.0.{index}"),
            trace_id=bytes(range(16)),
            span_id=bytes(range(8)),
        )
        record.attributes.add(key="http.status", value=AnyValue(int_value=200 + index))
        record.attributes.add(key="ok", value=AnyValue(bool_value=True))
        record.attributes.add(key="ratio", value=AnyValue(double_value=0.5))
        record.attributes.add(key="raw", value=AnyValue(bytes_value=b"\x00\xff"))
        records.append(record)
    records.append(LogRecord(body=nested_value(3)))
    return request_of(*records)


def nested_value(depth: int) -> AnyValue:
    """kvlist in array in kvlist ... `depth` containers deep, a string at the bottom."""
    value = AnyValue(string_value="bottom")
    for level in range(depth):
        outer = AnyValue()
        if level % 2:
            outer.array_value.values.add().CopyFrom(value)
        else:
            outer.kvlist_value.values.add(key=f"k{level}").value.CopyFrom(value)
        value = outer
    return value


def nested_bytes(depth: int) -> bytes:
    """A request whose one body is nested `depth` containers deep, encoded by hand: the protobuf
    library refuses to build (or parse) messages past its recursion limit, a client need not."""

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    value = field(1, b"bottom")  # AnyValue.string_value
    for level in range(depth):
        if level % 2:
            value = field(5, field(1, value))  # AnyValue.array_value -> ArrayValue.values
        else:
            value = field(6, field(1, field(1, b"k") + field(2, value)))  # kvlist_value -> values -> KeyValue
    record = field(5, value)  # LogRecord.body
    return field(1, field(2, field(2, record)))  # resource_logs -> scope_logs -> log_records


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def many_attributes(count: int) -> ExportLogsServiceRequest:
    record = LogRecord(body=AnyValue(string_value="one record, many attributes"))
    for index in range(count):
        record.attributes.add(key=f"attribute.{index}").value.string_value = f"value-{index}"
    return request_of(record)


def huge_body(characters: int) -> ExportLogsServiceRequest:
    return request_of(LogRecord(body=AnyValue(string_value="word " * (characters // 5))))


def invalid_utf8_protobuf() -> bytes:
    """A string field holding bytes that are not UTF-8 (protobuf requires UTF-8 in proto3 strings)."""
    marker = "MARKERMARKER"
    body = request_of(LogRecord(body=AnyValue(string_value=marker))).SerializeToString()
    return body.replace(marker.encode(), b"\xff\xfe\xc3\x28\xa0\xa1\xed\xa0\x80\x80\x80\x80")


def invalid_utf8_json() -> bytes:
    return b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"\xff\xfe\xc3\x28"}}]}]}]}'


def wrong_wire_type() -> bytes:
    """resource_logs (field 1, a message) sent as a varint: protobuf keeps it as an unknown field."""
    return b"\x08\x96\x01"


def strindex_body() -> bytes:
    """A body of the AnyValue kind OTLP added for profiles (string_value_strindex)."""
    record = LogRecord()
    record.body.string_value_strindex = 7
    return request_of(record).SerializeToString()


def compression_bomb(inflated_bytes: int, encoding: str = "gzip") -> bytes:
    """`inflated_bytes` of zeros, compressed in 1 MiB steps (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(inflated_bytes // len(chunk))]
    parts.append(compressor.flush())
    return b"".join(parts)


def seeds() -> Iterator[tuple[str, bytes]]:
    """(target name, input) pairs for a fuzzer's starting corpus."""
    ordinary = ordinary_request()
    protobuf = (
        ordinary.SerializeToString(),
        nested_bytes(20),
        many_attributes(50).SerializeToString(),
        invalid_utf8_protobuf(),
        wrong_wire_type(),
        strindex_body(),
    )
    for target in ("protobuf", "wirescan"):
        yield from ((target, data) for data in protobuf)
    yield "json", message_to_json(ordinary)
    yield "json", message_to_json(request_of(LogRecord(body=nested_value(10))))
    yield "json", invalid_utf8_json()
    for selector, encoding in ((b"\x00", "gzip"), (b"\x01", "deflate")):
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
        yield "inflate", selector + compressor.compress(ordinary.SerializeToString()) + compressor.flush()
