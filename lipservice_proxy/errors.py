"""The one exception tree of lipservice-proxy.

    LipserviceError
    ├── ConfigError            the config file or an override is invalid (exit code 2)
    ├── PolicyError            a policy file is invalid (the last good policy stays)
    ├── PatternStoreError      a pattern-engine state is missing, unreadable, corrupt or unwritable
    ├── InputError             a command's input file is missing, unreadable or empty (exit code 2)
    ├── AdminRequestFailed     a command's call to a running proxy's admin API failed (`proposals`)
    ├── RequestError           a client request cannot be accepted as sent
    │   ├── BadRequest         malformed protobuf/JSON, bad gzip, invalid data
    │   ├── PayloadTooLarge    over the (decompressed) size limit, or more than a queue can ever hold
    │   ├── UnsupportedMedia   unknown Content-Type or Content-Encoding
    │   ├── RequestTimeout     the body did not arrive within the read timeout
    │   ├── Unauthenticated    a missing or wrong bearer token
    │   └── NotAccepted        a signal this proxy does not take (its passthrough is not set)
    ├── Backpressure           queues or memory are full; retry later
    ├── PassthroughError       the upstream of passed-through traces or metrics refused them
    └── ExportError            sending upstream failed
        ├── RetryableExportError   try again (after retry_after when the server said so)
        └── PermanentExportError   retrying cannot help; the batch is dropped and counted

What a client is answered for each (HTTP status, gRPC code, retryable, outcome label) is the table in
`otlp/status.py`, the one place for it; receivers translate RequestError, Backpressure and
PassthroughError through it. Exporters raise ExportError and the retry loop decides from `retryable`.
"""

from __future__ import annotations


class LipserviceError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(LipserviceError):
    """The configuration is invalid. The message names the key and the problem."""


class PolicyError(LipserviceError):
    """A policy document is invalid. The message names the field and the problem."""


class InputError(LipserviceError):
    """A command's input (a log file, a state file) is missing, unreadable or empty."""


class AdminRequestFailed(LipserviceError):
    """A command's call to a running proxy's admin API was answered with an error or not at all."""


class PatternStoreError(LipserviceError):
    """A pattern-engine state cannot be loaded or saved. The message names the file and the problem."""


class RequestError(LipserviceError):
    """A client request that cannot be accepted as sent. Never retryable by the client."""


class BadRequest(RequestError):
    """Malformed protobuf or JSON, a bad compressed body, or data that breaks a rule."""


class PayloadTooLarge(RequestError):
    """Over a size limit: the body (before or after decompression), or what a queue can ever hold."""


class UnsupportedMedia(RequestError):
    """A Content-Type or Content-Encoding the receiver does not speak."""


class RequestTimeout(RequestError):
    """The body did not arrive within the read timeout."""


class Unauthenticated(RequestError):
    """The request has no bearer token, or not the one configured."""


class NotAccepted(RequestError):
    """A signal this proxy does not take: traces or metrics without a passthrough for them."""


class Backpressure(LipserviceError):
    """The proxy cannot take more data right now; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PassthroughError(LipserviceError):
    """The upstream of passed-through traces or metrics refused them or could not be reached.

    Carries the upstream's gRPC status (its code number, message and the trailers with its details) so
    that the client is told what the upstream said, and retries or not as if it talked to it itself."""

    def __init__(
        self,
        grpc_code: int,
        message: str,
        trailers: tuple[tuple[str, str | bytes], ...] = (),
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code
        self.message = message
        self.trailers = trailers
        self.retry_after = retry_after


class ExportError(LipserviceError):
    """Sending a batch upstream failed."""

    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetryableExportError(ExportError):
    retryable = True


class PermanentExportError(ExportError):
    retryable = False
