"""The one exception tree of lipservice-proxy.

    LipserviceError
    ├── ConfigError            the config file or an override is invalid (exit code 2)
    ├── PolicyError            a policy file is invalid (the last good policy stays)
    ├── PatternStoreError      a pattern-engine state is missing, unreadable, corrupt or unwritable
    ├── InputError             a command's input file is missing, unreadable or empty (exit code 2)
    ├── RequestError           a client request is bad; carries the HTTP status to answer with
    │   ├── BadRequest         malformed protobuf/JSON, bad gzip, invalid data      -> 400 / INVALID_ARGUMENT
    │   ├── PayloadTooLarge    over the (decompressed) size limit                -> 413 / RESOURCE_EXHAUSTED
    │   ├── UnsupportedMedia   unknown Content-Type or Content-Encoding            -> 415
    │   └── RequestTimeout     the body did not arrive within the read timeout    -> 408
    ├── Backpressure           queues or memory are full; retry later              -> 503 / UNAVAILABLE
    └── ExportError            sending upstream failed
        ├── RetryableExportError   try again (after retry_after when the server said so)
        └── PermanentExportError   retrying cannot help; the batch is dropped and counted

Receivers translate RequestError and Backpressure into protocol status codes; exporters raise
ExportError and the retry loop decides from `retryable` alone.
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


class PatternStoreError(LipserviceError):
    """A pattern-engine state cannot be loaded or saved. The message names the file and the problem."""


class RequestError(LipserviceError):
    """A client request that cannot be accepted as sent. Never retryable by the client."""

    http_status = 400


class BadRequest(RequestError):
    http_status = 400


class PayloadTooLarge(RequestError):
    http_status = 413


class UnsupportedMedia(RequestError):
    http_status = 415


class RequestTimeout(RequestError):
    http_status = 408


class Backpressure(LipserviceError):
    """The proxy cannot take more data right now; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
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
