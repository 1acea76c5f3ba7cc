"""Property fuzzing of the OTLP decoders and the sampler behind them (hypothesis; the same targets
as the atheris harness in fuzz/). Any input must decode or be refused with a RequestError; whatever
decodes must sample with consistent counts and re-encode.

CI runs a bounded number of examples per test; a longer run:
    LIPSERVICE_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_fuzz_decoders.py
"""

from __future__ import annotations

import os
from datetime import timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from fuzz import payloads, targets
from lipservice_proxy.errors import BadRequest, RequestError
from lipservice_proxy.otlp.json_codec import MAX_NESTING, json_to_message, message_to_json
from lipservice_proxy.receivers.handler import decode_protobuf

EXAMPLES = int(os.environ.get("LIPSERVICE_FUZZ_EXAMPLES", "300"))
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=2),  # each case is bounded in time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---- structured requests: valid protobuf, hostile content ----

text = st.text(max_size=200) | st.sampled_from(["", "user 42 logged in", "GET /health 200", "x" * 5000])
scalars = st.one_of(
    text.map(lambda s: AnyValue(string_value=s)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: AnyValue(double_value=f)),
    st.binary(max_size=64).map(lambda b: AnyValue(bytes_value=b)),
    st.just(AnyValue()),
)
any_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
        st.lists(st.tuples(text, inner), max_size=4).map(
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs]))
        ),
    ),
    max_leaves=10,
)
attributes = st.lists(st.builds(KeyValue, key=text, value=any_values), max_size=4)
log_records = st.builds(
    LogRecord,
    time_unix_nano=st.integers(0, 2**64 - 1),
    severity_number=st.integers(-(2**31), 2**31 - 1),  # an open enum: any int32 is on the wire
    severity_text=st.sampled_from(["", "INFO", "warning", "Err", "FATAL", "nonsense"]) | text,
    body=any_values,
    attributes=attributes,
    trace_id=st.binary(max_size=20),  # wrong lengths are rejected per record (partial success)
    span_id=st.binary(max_size=10),
    flags=st.integers(0, 2**32 - 1),
)
service_attribute = st.one_of(
    st.just([]),
    text.map(lambda s: [KeyValue(key="service.name", value=AnyValue(string_value=s))]),
    any_values.map(lambda v: [KeyValue(key="service.name", value=v)]),
)
requests = st.builds(
    lambda resources: ExportLogsServiceRequest(resource_logs=resources),
    st.lists(
        st.builds(
            lambda service, scopes: ResourceLogs(resource={"attributes": service}, scope_logs=scopes),
            service_attribute,
            st.lists(
                st.builds(lambda rs: ScopeLogs(log_records=rs), st.lists(log_records, max_size=4)), max_size=2
            ),
        ),
        max_size=2,
    ),
)


@fuzz_settings
@given(request=requests)
def test_any_well_formed_request_samples_consistently_in_both_encodings(
    request: ExportLogsServiceRequest,
) -> None:
    targets.protobuf_request(request.SerializeToString())
    targets.json_request(message_to_json(request))


# ---- raw bytes, and mutations of real requests ----


@fuzz_settings
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_never_escape_as_anything_but_a_bad_request(data: bytes) -> None:
    for target in targets.TARGETS.values():
        target(data)


SEEDS = list(payloads.seeds())


@st.composite
def mutated_seeds(draw: st.DrawFn) -> tuple[str, bytes]:
    name, seed = draw(st.sampled_from(SEEDS))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "duplicate"]))
        if action == "truncate":
            del data[position:]
        elif action == "flip" and position < len(data):
            data[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        else:
            data[position:position] = data[position : position + draw(st.integers(1, 64))]
    return name, bytes(data)


@fuzz_settings
@given(case=mutated_seeds())
def test_truncated_and_corrupted_requests_are_refused_or_sampled(case: tuple[str, bytes]) -> None:
    name, data = case
    targets.TARGETS[name](data)


# ---- OTLP/JSON with the right keys and the wrong everything else ----

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=12,
)
OTLP_KEYS = [
    "resourceLogs", "resource", "attributes", "key", "value", "stringValue", "intValue", "kvlistValue",
    "arrayValue", "values", "scopeLogs", "scope", "logRecords", "body", "traceId", "spanId",
    "severityNumber", "severityText", "timeUnixNano", "flags", "bytesValue", "doubleValue",
]  # fmt: skip
otlp_shaped = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(OTLP_KEYS), inner, max_size=4)
    ),
    max_leaves=25,
)


@fuzz_settings
@given(tree=otlp_shaped | json_values)
def test_json_of_any_shape_is_refused_clearly_or_sampled(tree: object) -> None:
    data = orjson.dumps(tree, option=orjson.OPT_NON_STR_KEYS)
    targets.json_request(data)
    try:
        json_to_message(data, ExportLogsServiceRequest)
    except RequestError as error:
        assert str(error).startswith(("invalid ExportLogsServiceRequest", "invalid JSON")), str(error)


# ---- the named hostile cases ----


@pytest.mark.parametrize("depth", [10, 30])
def test_nested_values_within_protobufs_limit_decode_and_sample(depth: int) -> None:
    targets.protobuf_request(payloads.nested_bytes(depth))
    request = decode_protobuf(payloads.nested_bytes(depth), ExportLogsServiceRequest)
    assert request.resource_logs[0].scope_logs[0].log_records[0].body.WhichOneof("value")  # type: ignore[attr-defined]


@pytest.mark.parametrize("depth", [60, 1000])
def test_values_nested_past_the_limit_are_bad_requests(depth: int) -> None:
    with pytest.raises(BadRequest, match="malformed protobuf"):
        decode_protobuf(payloads.nested_bytes(depth), ExportLogsServiceRequest)


def test_json_nesting_past_the_limit_is_a_bad_request_not_a_recursion_error() -> None:
    value: dict[str, object] = {"stringValue": "bottom"}
    for _ in range(MAX_NESTING // 2):  # each wrap is two messages (AnyValue, ArrayValue)
        value = {"arrayValue": {"values": [value]}}
    request = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": value}]}]}]}
    with pytest.raises(BadRequest, match="nested deeper than"):
        json_to_message(orjson.dumps(request), ExportLogsServiceRequest)
    deep_array = b"[" * 100_000 + b"]" * 100_000  # orjson's own limit, not ours
    with pytest.raises(BadRequest, match="invalid JSON"):
        json_to_message(deep_array, ExportLogsServiceRequest)


def test_invalid_utf8_is_a_bad_request_in_both_encodings() -> None:
    with pytest.raises(BadRequest, match="malformed protobuf"):
        decode_protobuf(payloads.invalid_utf8_protobuf(), ExportLogsServiceRequest)
    with pytest.raises(BadRequest, match="invalid JSON"):
        json_to_message(payloads.invalid_utf8_json(), ExportLogsServiceRequest)


def test_a_wrong_wire_type_is_an_unknown_field_as_protobuf_specifies() -> None:
    request = decode_protobuf(payloads.wrong_wire_type(), ExportLogsServiceRequest)
    assert not request.resource_logs  # type: ignore[attr-defined]  # ignored, not misread as data


def test_a_hundred_thousand_attributes_sample_in_bounded_time() -> None:
    request = payloads.many_attributes(100_000)
    targets.protobuf_request(request.SerializeToString())


def test_compression_bombs_stop_at_the_limit() -> None:
    for encoding in ("gzip", "deflate"):
        bomb = payloads.compression_bomb(64 << 20, encoding)
        with pytest.raises(RequestError, match="exceeds the limit"):
            targets.inflate(bomb, encoding, targets.INFLATE_LIMIT)


def test_a_body_of_a_kind_newer_than_the_pattern_engine_gets_a_pattern() -> None:
    # found by the atheris run (fuzz/README.md): AnyValue.string_value_strindex, added to OTLP for
    # profiles, made the pattern engine raise KeyError, so the receiver answered 500
    targets.protobuf_request(payloads.strindex_body())
