"""OTLP/gRPC log exporter: the payload bytes go out as they are, never re-serialized.

Status handling follows the OTLP specification: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
UNAVAILABLE and DATA_LOSS are retryable; RESOURCE_EXHAUSTED is retryable only when the server attached
`google.rpc.RetryInfo` to the status (trailer `grpc-status-details-bin`), whose delay becomes
`retry_after`; every other code is permanent. A partial success in the response is reported as
`ExportResult.rejected_records`.

A call made while the channel has no connection fails at once with UNAVAILABLE. `reconnected` then
watches the channel (which reconnects on its own, at most `grpc.max_reconnect_backoff_ms` apart) and
returns as soon as it is READY, so the retry loop sends within about a second of the upstream's return
however long its own backoff has grown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from ..config import OtlpGrpcExporterConfig
from ..errors import ConfigError, ExportError, PermanentExportError, RetryableExportError
from .base import UNREADABLE_RESPONSE, ExportResult, LogExporter, partial_success_result
from .grpc_channel import open_channel, plaintext_hint

LOGS_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

Metadata = Iterable[tuple[str, str | bytes]]
READY = grpc.ChannelConnectivity.READY


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


def classify_rpc_error(
    code: grpc.StatusCode, details: str | None, trailing_metadata: Metadata | None
) -> ExportError:
    """The export error an RPC failure means under the OTLP rules (reusable by any OTLP/gRPC client)."""
    delay = retry_info_delay(trailing_metadata)
    message = f"gRPC {code.name}: {details or 'no details'}"
    if code in RETRYABLE_CODES or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
        return RetryableExportError(message, retry_after=delay)
    return PermanentExportError(message)


def grpc_metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Config headers as gRPC metadata, whose keys must be lowercase ASCII."""
    metadata = []
    for name, value in headers.items():
        key = name.strip().lower()
        if not key or not key.isascii() or key.endswith("-bin") or key.startswith("grpc-"):
            raise ConfigError(f"header {name!r} cannot be sent as gRPC metadata")
        metadata.append((key, value))
    return tuple(metadata)


class OtlpGrpcExporter(LogExporter):
    """Sends each payload as one `LogsService/Export` call."""

    def __init__(self, config: OtlpGrpcExporterConfig) -> None:
        super().__init__(config.name)
        self._config = config
        self._metadata = grpc_metadata(config.headers)
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryUnaryMultiCallable | None = None
        self._connection_lost = False  # the last failed call found the channel without a connection

    @classmethod
    def from_config(cls, config: OtlpGrpcExporterConfig, environ: Mapping[str, str]) -> OtlpGrpcExporter:
        return cls(config)

    async def start(self) -> None:
        config = self._config
        self._channel = open_channel(config.endpoint, config.tls, compression=config.compression)
        # No serializers: the payload already is a serialized ExportLogsServiceRequest.
        self._call = self._channel.unary_unary(
            LOGS_EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )

    async def export(self, payload: bytes, records: int) -> ExportResult:
        if self._call is None:
            raise RuntimeError(f"exporter {self.name}: export() before start()")
        try:
            response = await self._call(payload, timeout=self._config.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            channel = self._channel
            self._connection_lost = channel is not None and channel.get_state() != READY
            details = exc.details()
            details = details and details + plaintext_hint(self._config.endpoint, self._config.tls, details)
            raise classify_rpc_error(exc.code(), details, exc.trailing_metadata()) from None
        self._connection_lost = False
        try:
            parsed = ExportLogsServiceResponse.FromString(response)
        except DecodeError:
            return UNREADABLE_RESPONSE
        return partial_success_result(parsed)

    async def reconnected(self) -> None:
        channel = self._channel
        if channel is None or not self._connection_lost:  # the upstream itself answered: back off
            await super().reconnected()
            return
        state = channel.get_state(try_to_connect=True)  # an IDLE channel connects only when asked
        while state != READY:
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)

    async def shutdown(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._call = None
