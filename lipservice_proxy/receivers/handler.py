"""What both receivers share: parse a logs request once, run the pipeline, build the response.

The handler is protocol-neutral: it takes the (already decompressed) body and its encoding and
returns an `ExportLogsServiceResponse`, or raises `RequestError` / `Backpressure` for the receiver
to translate into its protocol's status. Everything up to queueing is synchronous; the one await is
for a disk queue to hold the kept records durably before the client is answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from ..errors import BadRequest
from ..otlp.json_codec import json_to_message, message_to_json
from ..pipeline import LogsPipeline
from ..telemetry import Telemetry

if TYPE_CHECKING:
    from ..auth import BearerAuthenticator
    from .passthrough import Passthrough

Encoding = Literal["protobuf", "json"]
M = TypeVar("M", bound=Message)

CONTENT_TYPES: dict[str, Encoding] = {
    "application/x-protobuf": "protobuf",
    "application/protobuf": "protobuf",
    "application/json": "json",
}
RESPONSE_CONTENT_TYPE: dict[Encoding, str] = {
    "protobuf": "application/x-protobuf",
    "json": "application/json",
}


def decode_protobuf(body: bytes, message_type: type[M]) -> M:
    try:
        return message_type.FromString(body)
    except DecodeError as exc:
        raise BadRequest(f"malformed protobuf: {exc}") from None


def encode(message: Message, encoding: Encoding) -> bytes:
    return message_to_json(message) if encoding == "json" else message.SerializeToString()


def status_body(code: int, message: str, encoding: Encoding) -> bytes:
    """A google.rpc.Status, the body OTLP/HTTP prescribes for errors."""
    return encode(status_pb2.Status(code=code, message=message), encoding)


class LogsHandler:
    def __init__(self, pipeline: LogsPipeline) -> None:
        self._pipeline = pipeline

    async def handle(self, body: bytes, encoding: Encoding) -> ExportLogsServiceResponse:
        if encoding == "json":
            request = json_to_message(body, ExportLogsServiceRequest)
        else:
            request = decode_protobuf(body, ExportLogsServiceRequest)
        response = ExportLogsServiceResponse()
        if not request.resource_logs:
            return response  # an empty request is a success (OTLP spec)
        wire_size = len(body) if encoding == "protobuf" else None
        result = await self._pipeline.consume(request, body, wire_size)
        if result.rejected_records:
            response.partial_success.rejected_log_records = result.rejected_records
            response.partial_success.error_message = result.message
        return response


def count_accepted(telemetry: Telemetry, protocol: str, response: ExportLogsServiceResponse) -> None:
    """An answered request: success, or partial with its rejected records counted."""
    rejected = response.partial_success.rejected_log_records
    telemetry.receiver_requests.labels(protocol, "partial" if rejected else "success").inc()
    if rejected:
        telemetry.receiver_rejected_records.labels(protocol).inc(rejected)


@dataclass(frozen=True, slots=True)
class ReceiverContext:
    """What both receivers are handed at construction, besides their own config and TLS."""

    logs: LogsHandler
    telemetry: Telemetry
    passthrough: Passthrough | None = None
    auth: BearerAuthenticator | None = None
    reuse_port: bool = False  # `run --workers N`: every worker binds the same ports
