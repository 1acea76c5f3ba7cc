"""Realistic OTLP requests for tests and benchmarks: real log lines from loghub, every AnyValue kind,
spans with links and events, every metric kind. Deterministic for a given seed."""

from __future__ import annotations

import math
import random
from functools import cache

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from .loghub import LoghubLine, iter_lines

BASE_TIME_NS = 1_732_000_000_000_000_000

SEVERITY_NUMBERS = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17, "FATAL": 21}


@cache
def loghub_lines(system: str) -> tuple[LoghubLine, ...]:
    return tuple(iter_lines(system))


def attribute(key: str, value: object) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def any_value(value: object) -> AnyValue:
    """A Python value as an AnyValue: str, bool, int, float, bytes, list and dict nest as OTLP does."""
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value={"values": [any_value(item) for item in value]})
    if isinstance(value, dict):
        return AnyValue(kvlist_value={"values": [attribute(k, v) for k, v in value.items()]})
    raise TypeError(f"no AnyValue for {type(value).__name__}")


def log_record(line: LoghubLine, index: int, rng: random.Random) -> LogRecord:
    level = (line.level or "INFO").upper()
    record = LogRecord(
        time_unix_nano=BASE_TIME_NS + index * 1_000_003,
        observed_time_unix_nano=BASE_TIME_NS + index * 1_000_003 + 517,
        severity_number=SEVERITY_NUMBERS.get(level, 9),  # type: ignore[arg-type]
        severity_text=level,
        body=AnyValue(string_value=line.content),
        attributes=[
            attribute("log.event_id", line.event_id),
            attribute("process.pid", rng.randrange(1, 65536)),
            attribute("sampled", index % 3 == 0),
        ],
    )
    if index % 2 == 0:
        record.trace_id = rng.randbytes(16)
        record.span_id = rng.randbytes(8)
        record.flags = 1
    if index % 50 == 0:  # the rarer AnyValue kinds, nested
        record.attributes.append(attribute("latency_ms", rng.random() * 100))
        record.attributes.append(attribute("raw", rng.randbytes(5)))
        record.attributes.append(attribute("ctx", {"tags": ["a", "b", 3], "user": {"id": -(2**62)}}))
    return record


def log_request(
    system: str = "HDFS", records: int = 2000, *, services: int = 3, seed: int = 0
) -> ExportLogsServiceRequest:
    """`records` loghub lines (cycled) spread over `services` resources, one scope each."""
    rng = random.Random(seed)
    lines = loghub_lines(system)
    request = ExportLogsServiceRequest()
    scopes = []
    for number in range(services):
        resource_logs = request.resource_logs.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
        resource_logs.resource.attributes.extend(
            [
                attribute("service.name", f"{system.lower()}-{number}"),
                attribute("host.name", f"node-{number}"),
            ]
        )
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = "lipservice.samples"
        scope_logs.scope.version = "1.0"
        scopes.append(scope_logs)
    for index in range(records):
        scopes[index % services].log_records.append(log_record(lines[index % len(lines)], index, rng))
    return request


def trace_request(seed: int = 0) -> ExportTraceServiceRequest:
    rng = random.Random(seed)
    trace_id = rng.randbytes(16)
    root, child = rng.randbytes(8), rng.randbytes(8)
    span_fields = {
        "trace_id": trace_id,
        "start_time_unix_nano": BASE_TIME_NS,
        "end_time_unix_nano": BASE_TIME_NS + 2_500_000,
    }
    return ExportTraceServiceRequest(
        resource_spans=[
            {
                "resource": {
                    "attributes": [attribute("service.name", "checkout")],
                    "dropped_attributes_count": 1,
                },
                "scope_spans": [
                    {
                        "scope": {"name": "tracer", "version": "2.1"},
                        "spans": [
                            {**span_fields, "span_id": root, "name": "GET /cart", "kind": 2, "flags": 257},
                            {
                                **span_fields,
                                "span_id": child,
                                "parent_span_id": root,
                                "name": "SELECT",
                                "kind": 3,
                                "trace_state": "vendor=1",
                                "attributes": [attribute("db.rows", 12)],
                                "events": [{"time_unix_nano": BASE_TIME_NS + 5, "name": "retry"}],
                                "links": [{"trace_id": rng.randbytes(16), "span_id": rng.randbytes(8)}],
                                "status": {"code": 2, "message": "timeout"},
                            },
                        ],
                    }
                ],
            }
        ]
    )


def metrics_request(seed: int = 0) -> ExportMetricsServiceRequest:
    rng = random.Random(seed)
    exemplar = {
        "time_unix_nano": BASE_TIME_NS,
        "as_double": 0.25,
        "trace_id": rng.randbytes(16),
        "span_id": rng.randbytes(8),
        "filtered_attributes": [attribute("route", "/x")],
    }
    point = {"time_unix_nano": BASE_TIME_NS, "start_time_unix_nano": BASE_TIME_NS - 10**9}
    metrics = [
        {"name": "queue.depth", "unit": "1", "gauge": {"data_points": [{**point, "as_int": -7}]}},
        {
            "name": "ratio",
            "gauge": {"data_points": [{**point, "as_double": math.nan}, {**point, "as_double": -math.inf}]},
        },
        {
            "name": "requests",
            "sum": {
                "data_points": [{**point, "as_int": 2**53 + 1, "exemplars": [exemplar]}],
                "aggregation_temporality": 2,
                "is_monotonic": True,
            },
        },
        {
            "name": "latency",
            "unit": "s",
            "histogram": {
                "data_points": [
                    {
                        **point,
                        "count": 6,
                        "sum": 0.0,  # optional field set to zero: must survive the round trip
                        "min": 0.001,
                        "max": 2.5,
                        "bucket_counts": [1, 2, 3],
                        "explicit_bounds": [0.1, 1.0],
                        "exemplars": [exemplar],
                    }
                ],
                "aggregation_temporality": 1,
            },
        },
        {
            "name": "size",
            "exponential_histogram": {
                "data_points": [
                    {
                        **point,
                        "count": 3,
                        "scale": -2,
                        "zero_count": 1,
                        "positive": {"offset": -3, "bucket_counts": [1, 1]},
                        "zero_threshold": 1e-9,
                    }
                ],
                "aggregation_temporality": 2,
            },
        },
        {
            "name": "rpc.duration",
            "summary": {
                "data_points": [
                    {
                        **point,
                        "count": 10,
                        "sum": 12.5,
                        "quantile_values": [
                            {"quantile": 0.5, "value": 1.0},
                            {"quantile": 0.99, "value": 4.0},
                        ],
                    }
                ]
            },
        },
    ]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            {
                "resource": {"attributes": [attribute("service.name", "api")]},
                "scope_metrics": [{"scope": {"name": "meter"}, "metrics": metrics}],
            }
        ]
    )
