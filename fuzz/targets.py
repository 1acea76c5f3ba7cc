"""Fuzz targets: bytes in, a property checked. Shared by the atheris harness (`python -m fuzz.run`)
and the hypothesis tests (tests/test_fuzz_*.py), so both explore the same code with the same oracle.

The oracle is what a receiver promises: every input either decodes or raises the `RequestError` the
receiver turns into a 4xx / INVALID_ARGUMENT; a decoded request goes through the real sampler with
its counts adding up, every record left in it annotated, and the result re-encodable as protobuf
and OTLP/JSON (what the exporters send). Any other exception, or a broken invariant, is a finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from lipservice_proxy.errors import RequestError
from lipservice_proxy.otlp.json_codec import json_to_message, message_to_json
from lipservice_proxy.patterns import PatternEngine
from lipservice_proxy.receivers.handler import decode_protobuf
from lipservice_proxy.receivers.http import inflate
from lipservice_proxy.sampling.annotate import COUNT, OWN_KEYS, PATTERN_ID, SAMPLE_RATE, TEMPLATE
from lipservice_proxy.sampling.policy import Policy
from lipservice_proxy.sampling.sampler import Sampler
from lipservice_proxy.sampling.scan import scan_message
from lipservice_proxy.sampling.wirescan import largest_record, scan_request, splice

INFLATE_LIMIT = 1 << 20

# One sampler for the whole run, as in a long-lived proxy: state carried from input to input is part
# of what is explored. Small caps make eviction paths run often.
_SAMPLER = Sampler(PatternEngine(max_templates=64, cache_size=256), Policy(), max_states=128)


def record_count(request: ExportLogsServiceRequest) -> int:
    return sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)


def check_sampled(request: ExportLogsServiceRequest, raw: bytes, wire_size: int | None = None) -> None:
    """Run the sampler over a decoded request and check what it promises."""
    before = record_count(request)
    outcome = _SAMPLER.process(request, raw, time.time(), wire_size)
    assert outcome.received == before, (outcome.received, before)
    assert outcome.kept + outcome.dropped + outcome.rejected == outcome.received
    assert record_count(request) == outcome.forwarded == outcome.kept
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            assert scope_logs.log_records, "an emptied scope must be removed"
            for record in scope_logs.log_records:
                own = [a for a in record.attributes if a.key in OWN_KEYS]
                assert [a.key for a in own] == [SAMPLE_RATE, PATTERN_ID, TEMPLATE, COUNT], own
                assert own[0].value.double_value >= 1.0 and own[3].value.int_value >= 1
    ExportLogsServiceRequest.FromString(request.SerializeToString())
    json_to_message(message_to_json(request), ExportLogsServiceRequest)


def protobuf_request(data: bytes) -> None:
    try:
        request = decode_protobuf(data, ExportLogsServiceRequest)
    except RequestError:
        return
    check_sampled(request, data, len(data))  # type: ignore[arg-type]


def wire_scan(data: bytes) -> None:
    """The compiled scan of any bytes: no failure; where protobuf parses them, it gives up (None) or
    finds what the reference scan (scan.py) finds in the parsed message."""
    scans = scan_request(data)
    largest = largest_record(data)
    try:
        request = decode_protobuf(data, ExportLogsServiceRequest)
    except RequestError:
        return
    if scans is None:
        return
    assert scans == scan_message(request), "the compiled scan differs from the reference"  # type: ignore[arg-type]
    sizes = [r.ByteSize() for rl in request.resource_logs for s in rl.scope_logs for r in s.log_records]  # type: ignore[attr-defined]
    assert largest is not None and largest >= max(sizes, default=0), (largest, sizes)
    # splice every other record, annotated, and check it against the same edit of the message
    annotation = LogRecord(attributes=[KeyValue(key=COUNT, value=AnyValue(int_value=7))]).SerializeToString()
    plan = [
        [[annotation if index % 2 else None for index in range(len(scope.log_records))] for scope in resource]
        for resource in (r.scope_logs for r in request.resource_logs)  # type: ignore[attr-defined]
    ]
    wire, _ = splice(data, plan)
    assert ExportLogsServiceRequest.FromString(wire) == edited(request, plan), "splice differs from the edit"  # type: ignore[arg-type]


def edited(
    request: ExportLogsServiceRequest, plan: list[list[list[bytes | None]]]
) -> ExportLogsServiceRequest:
    """What `splice` makes, by editing the message: the reference of the zero-copy output."""
    request = ExportLogsServiceRequest.FromString(request.SerializeToString())
    for resource_index in reversed(range(len(request.resource_logs))):
        scopes = request.resource_logs[resource_index].scope_logs
        for scope_index in reversed(range(len(scopes))):
            records = scopes[scope_index].log_records
            for index in reversed(range(len(records))):
                annotation = plan[resource_index][scope_index][index]
                if annotation is None:
                    del records[index]
                else:
                    records[index].MergeFromString(annotation)
            if not records:
                del scopes[scope_index]
        if not scopes:
            del request.resource_logs[resource_index]
    return request


def json_request(data: bytes) -> None:
    try:
        request = json_to_message(data, ExportLogsServiceRequest)
    except RequestError:
        return
    check_sampled(request, data)


def compressed_body(data: bytes) -> None:
    """The first byte picks the Content-Encoding; the rest is the body."""
    encoding = ("gzip", "deflate", "x-gzip", "identity", "br")[data[0] % 5] if data else "gzip"
    try:
        inflated = inflate(data[1:], encoding, INFLATE_LIMIT)
    except RequestError:
        return
    assert len(inflated) <= INFLATE_LIMIT


TARGETS: dict[str, Callable[[bytes], None]] = {
    "protobuf": protobuf_request,
    "json": json_request,
    "inflate": compressed_body,
    "wirescan": wire_scan,
}
