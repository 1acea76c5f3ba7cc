"""Exact counts: every record of a (service, pattern, severity) key is accounted for by one record.

A kept record's `lipservice.count` is itself plus the records of its key dropped since the key's
previous kept record. The drops after a key's last kept record (its open tail) wait for the key's
next kept record; when none comes by the end of the window the tail opened in (first_per_window's
window), when the pattern state is forgotten, and at shutdown, the tail leaves as one summary
record: the template as body, the key's severity, resource and scope, `lipservice.count` = the
tail and `lipservice.summary` = true. Summing `lipservice.count` over kept and summary records
gives the records received per key exactly; before shutdown it falls short by the open tails.

`lipservice.count` is an OTLP int64: a count past 2**63-1 is split, the rest carried on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .annotate import COUNT, PATTERN_ID, SUMMARY, TEMPLATE
from .severity import SEVERITY_NAMES
from .window import window_start

MAX_COUNT = 2**63 - 1
SEVERITY_NUMBERS = (1, 5, 9, 13, 17, 21)  # the first OTLP SeverityNumber of each level


def carry_onto(tail: int) -> tuple[int, int]:
    """The count of a kept record that carries `tail` earlier drops, and the drops left to carry."""
    if tail < MAX_COUNT:
        return tail + 1, 0
    return MAX_COUNT, tail - (MAX_COUNT - 1)


def tail_due(since: float, now: float, window: float) -> bool:
    """Whether a tail opened at `since` leaves as a summary at `now`: its window has ended, or
    the clock went back before that window began."""
    start = window_start(since, window)
    return now >= start + window or now < start


def service_origin(service: str) -> tuple[bytes, bytes]:
    """Resource and scope bytes for a key whose records' own are unknown: the service name only."""
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    return resource.SerializeToString(), b""


@dataclass(frozen=True, slots=True)
class Tail:
    """One key's closed tail: the drops a summary record accounts for."""

    service: str
    pattern_id: str
    template: str
    level: int
    count: int
    origin: tuple[bytes, bytes]  # serialised resource and scope of the drops that opened the tail


@dataclass(slots=True)
class Summaries:
    """Summary records ready to export, and what they account for."""

    request: ExportLogsServiceRequest
    records: int
    count: int


def summaries(tails: Iterable[Tail], now: float) -> Summaries:
    """One summary record per tail (more when a tail passes MAX_COUNT), grouped by resource and scope."""
    request = ExportLogsServiceRequest()
    scopes: dict[tuple[bytes, bytes], ScopeLogs] = {}
    stamp = int(now * 1e9)
    records = total = 0
    for tail in tails:
        scope = scopes.get(tail.origin)
        if scope is None:
            resource_logs = request.resource_logs.add()
            resource_logs.resource.MergeFromString(tail.origin[0])
            scope = scopes[tail.origin] = resource_logs.scope_logs.add()
            scope.scope.MergeFromString(tail.origin[1])
        left = tail.count
        while left > 0:
            count = min(left, MAX_COUNT)
            left -= count
            record = scope.log_records.add(
                time_unix_nano=stamp,
                observed_time_unix_nano=stamp,
                severity_number=SEVERITY_NUMBERS[tail.level],
                severity_text=SEVERITY_NAMES[tail.level],
            )
            record.body.string_value = tail.template
            record.attributes.extend(
                [
                    KeyValue(key=COUNT, value=AnyValue(int_value=count)),
                    KeyValue(key=SUMMARY, value=AnyValue(bool_value=True)),
                    KeyValue(key=PATTERN_ID, value=AnyValue(string_value=tail.pattern_id)),
                    KeyValue(key=TEMPLATE, value=AnyValue(string_value=tail.template)),
                ]
            )
            records += 1
            total += count
    return Summaries(request, records, total)
