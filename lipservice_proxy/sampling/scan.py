"""The per-record stage of the sampler: what a decision needs from each record, grouped by body shape.

For one scope, `scan_scope` reads each record's body, severity number, trace id and span id and
groups the records by their body's digit runs (the UTF-8 body with every run of digits made one
0: the key of the pattern engine's second cache, masking.digit_runs), so that the rest of the
sampler works per key and per group, never per record:

- `shapes`: digit runs -> [the first body with that key, how many records have it, rows by level]
  in order of first occurrence. Rows by level is a list of N_LEVELS + 1 slots (None when empty);
  slot N_LEVELS holds the records whose severity_number is outside 1..24, whose level the sampler
  works out from severity_text or the template. A row is (index in the scope, trace id, chars).
- `others`: indices of the records whose body is no short text (empty, longer than the engine's
  key bound, a map, bytes or another value): the sampler names their pattern one by one.
- `invalid`: indices of records with a trace id that is not 16 bytes or a span id not 8 (or empty).
  They still count in their shape, as the engine learns from every body.

This module is the reference. `wirescan.scan_request` (compiled, wirescan.pyx) makes the same
structures for every scope of a protobuf request straight from its wire bytes, with no message
objects; tests hold the two to each other (tests/test_wirescan.py, fuzz/targets.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from ..patterns.engine import KEY_CHARS
from ..patterns.masking import digit_runs, digit_shape
from .severity import LEVEL_OF_NUMBER, SEVERITY_NAMES

N_LEVELS = len(SEVERITY_NAMES)
UNKNOWN_LEVEL = N_LEVELS  # the rows-by-level slot of records the severity number does not place

# (index in the scope, trace id (b"" when none), body length in characters)
Row = tuple[int, bytes, int]
# [first body of the shape (str), records of the shape (int), rows by level (list[list[Row] | None])]:
# a list, not a class, as the compiled scan builds one per shape and request
Shape = list[Any]
# (shapes, others, invalid): plain containers, the same from both scans
ScopeScan = tuple[dict[bytes, Shape], list[int], list[int]]


def ids_valid(trace_id: bytes, span_id: bytes) -> bool:
    return (not trace_id or len(trace_id) == 16) and len(span_id) in (0, 8)


def scan_scope(records: Iterable[LogRecord]) -> ScopeScan:
    """The reference scan of one scope's records (parsed messages)."""
    shapes: dict[bytes, Shape] = {}
    others: list[int] = []
    invalid: list[int] = []
    for index, record in enumerate(records):
        text = record.body.string_value  # "" when the body holds another kind of value
        if not text or len(text) > KEY_CHARS:
            others.append(index)
            continue
        key = digit_runs(digit_shape(text))
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = [text, 0, [None] * (N_LEVELS + 1)]
        shape[1] += 1
        trace_id = record.trace_id
        if not ids_valid(trace_id, record.span_id):
            invalid.append(index)
            continue
        number = record.severity_number
        level = LEVEL_OF_NUMBER[number] if 0 < number < 25 else UNKNOWN_LEVEL
        rows = shape[2][level]
        if rows is None:
            shape[2][level] = [(index, trace_id, len(text))]
        else:
            rows.append((index, trace_id, len(text)))
    return shapes, others, invalid


def scan_message(request: ExportLogsServiceRequest) -> list[list[ScopeScan]]:
    """The reference of `wirescan.scan_request`: every scope's scan, per resource."""
    return [
        [scan_scope(scope.log_records) for scope in resource.scope_logs] for resource in request.resource_logs
    ]
