"""The one status table: what a client is answered for each error, and OTLP's retry rules.

A receiver that fails a request looks the error up here (`answer_for`) and answers with the row's HTTP
status (and a `google.rpc.Status` body carrying the row's gRPC code) or gRPC code, counts the row's
outcome in `lipservice_receiver_requests_total{outcome}`, and attaches a retry delay (Retry-After or
RetryInfo) only when the row is retryable. OTLP makes RESOURCE_EXHAUSTED without RetryInfo permanent,
which is what an oversized request must be. A `PassthroughError` is answered with the upstream's own
status (`relayed`), so the client decides as if it talked to the upstream.

The exporters classify an upstream's answer by the same OTLP rules (`grpc_retryable`, `http_retryable`).
Errors that never reach a client (`NEVER_ANSWERED`: configuration, policy, state, input, admin-call and
export errors) have no row; tests/test_otlp_status.py fails for an error class that is in neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from ..errors import (
    AdminRequestFailed,
    Backpressure,
    BadRequest,
    ConfigError,
    ExportError,
    InputError,
    LipserviceError,
    NotAccepted,
    PassthroughError,
    PatternStoreError,
    PayloadTooLarge,
    PolicyError,
    RequestTimeout,
    Unauthenticated,
    UnsupportedMedia,
)

Code = grpc.StatusCode


@dataclass(frozen=True, slots=True)
class Answer:
    """How a receiver answers a request that failed."""

    http_status: int
    grpc_code: grpc.StatusCode
    retryable: bool
    """The client may send the same data again; only then does the answer carry a retry delay."""
    outcome: str
    """The `outcome` label of `lipservice_receiver_requests_total`."""


ANSWERS: Mapping[type[LipserviceError], Answer] = {
    BadRequest: Answer(400, Code.INVALID_ARGUMENT, False, "invalid"),
    PayloadTooLarge: Answer(413, Code.RESOURCE_EXHAUSTED, False, "too_large"),
    UnsupportedMedia: Answer(415, Code.INVALID_ARGUMENT, False, "unsupported"),
    RequestTimeout: Answer(408, Code.DEADLINE_EXCEEDED, False, "timeout"),
    Unauthenticated: Answer(401, Code.UNAUTHENTICATED, False, "unauthenticated"),
    NotAccepted: Answer(404, Code.UNIMPLEMENTED, False, "not_accepted"),
    Backpressure: Answer(503, Code.UNAVAILABLE, True, "refused"),
}

UNEXPECTED = Answer(500, Code.INTERNAL, False, "error")
"""The answer to an exception that is a bug, not a client's or upstream's doing."""

NEVER_ANSWERED: frozenset[type[LipserviceError]] = frozenset(
    {ConfigError, PolicyError, PatternStoreError, InputError, AdminRequestFailed, ExportError}
)
"""Errors (with their subclasses) that stop the proxy, are logged, or go to the exporters' retry loop."""

RETRYABLE_GRPC_CODES = frozenset(
    {
        Code.CANCELLED,
        Code.DEADLINE_EXCEEDED,
        Code.ABORTED,
        Code.OUT_OF_RANGE,
        Code.UNAVAILABLE,
        Code.DATA_LOSS,
    }
)
RETRYABLE_HTTP_STATUSES = frozenset({429, 502, 503, 504})

_CODE_OF_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_HTTP_STATUS_OF_CODE = {
    Code.INVALID_ARGUMENT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.UNIMPLEMENTED: 404,
    Code.DEADLINE_EXCEEDED: 504,
}


def grpc_retryable(code: grpc.StatusCode, has_retry_info: bool) -> bool:
    """OTLP/gRPC: the retryable codes, and RESOURCE_EXHAUSTED only when the server attached RetryInfo."""
    return code in RETRYABLE_GRPC_CODES or (code == Code.RESOURCE_EXHAUSTED and has_retry_info)


def http_retryable(status: int) -> bool:
    """OTLP/HTTP: 429, 502, 503 and 504 are retryable; every other error status is permanent."""
    return status in RETRYABLE_HTTP_STATUSES


def grpc_code(number: int) -> grpc.StatusCode:
    """The gRPC status code of a `google.rpc.Status` code number (UNKNOWN for one gRPC does not define)."""
    return _CODE_OF_NUMBER.get(number, Code.UNKNOWN)


def relayed(code: grpc.StatusCode, has_retry_info: bool) -> Answer:
    """The answer that tells a client what an upstream's gRPC status told us; on HTTP, the status an
    OTLP/HTTP server would use for the same thing (429 for a RESOURCE_EXHAUSTED with RetryInfo)."""
    retryable = grpc_retryable(code, has_retry_info)
    if code == Code.RESOURCE_EXHAUSTED:
        http_status = 429 if has_retry_info else 413
    else:
        http_status = _HTTP_STATUS_OF_CODE.get(code, 503 if retryable else 500)
    return Answer(http_status, code, retryable, code.name.lower())


def answer_for(error: Exception) -> Answer:
    """The row of the error's class (or its nearest ancestor with one); UNEXPECTED for anything else."""
    if isinstance(error, PassthroughError):
        return relayed(grpc_code(error.grpc_code), error.retry_after is not None)
    for cls in type(error).__mro__:
        answer = ANSWERS.get(cls)
        if answer is not None:
            return answer
    return UNEXPECTED


def retry_after(error: Exception) -> float | None:
    """Seconds a client should wait before retrying, for an error whose answer is retryable."""
    if not answer_for(error).retryable or not isinstance(error, Backpressure | PassthroughError):
        return None
    return error.retry_after
