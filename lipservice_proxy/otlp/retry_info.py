"""`google.rpc.RetryInfo` in a gRPC status's trailers: how an OTLP server tells a client to retry later.

Written by the gRPC receiver (full queues), read by the OTLP/gRPC exporter (a throttling upstream) and
by the passthrough (which relays the upstream's trailers to the client as they came).
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailer holding the full `google.rpc.Status` with its details (the Collector, Go and Java read it)."""
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"
"""The trailer holding the RetryInfo alone (where the OpenTelemetry Python SDK looks for it)."""
STATUS_TRAILERS = frozenset({STATUS_DETAILS_KEY, RETRY_INFO_KEY})

Metadata = Iterable[tuple[str, str | bytes]]


def retry_info_delay(trailing_metadata: Metadata | None) -> float | None:
    """Seconds from a `google.rpc.RetryInfo` in the status details, or None when there is none."""
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return max(0.0, info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def retry_info_trailer(
    code: grpc.StatusCode, message: str, retry_after: float
) -> tuple[tuple[str, bytes], ...]:
    """Trailers that make OTLP clients retry after `retry_after` seconds: the RetryInfo inside the status
    details and alone, each where some client looks for it."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(retry_after * 1e9))
    retry_info = error_details_pb2.RetryInfo(retry_delay=delay)
    detail = any_pb2.Any()
    detail.Pack(retry_info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return (
        (STATUS_DETAILS_KEY, status.SerializeToString()),
        (RETRY_INFO_KEY, retry_info.SerializeToString()),
    )
