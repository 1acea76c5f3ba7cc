"""The exporter contract: one upstream, one attempt per call.

What flows between the pipeline and the exporters is a *payload*: the bytes of a serialized
`ExportLogsServiceRequest` holding only kept records, with its record count. Protobuf merges
concatenated messages (repeated fields append), so batching several payloads is a byte join and
never a re-parse; an exporter parses only when its wire format needs it (JSON, size splitting).

`LogExporter.export` makes exactly one attempt and raises `RetryableExportError` (with the server's
`retry_after` when it gave one) or `PermanentExportError`. Retry, queueing and batching live around
it (`retry.py`, `queue.py`), as in the Collector's exporterhelper.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse


@dataclass(frozen=True, slots=True)
class ExportResult:
    """A successful send; `rejected_records` > 0 when the upstream reported partial success."""

    rejected_records: int = 0
    message: str = ""


UNREADABLE_RESPONSE = ExportResult(message="upstream response was not an ExportLogsServiceResponse; ignored")
"""A success whose optional partial-success report could not be read: the records were accepted."""


def partial_success_result(response: ExportLogsServiceResponse) -> ExportResult:
    """The ExportResult of a successful export's response."""
    return ExportResult(
        rejected_records=response.partial_success.rejected_log_records,
        message=response.partial_success.error_message,
    )


class LogExporter(abc.ABC):
    """One upstream for log records."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:
        """Open connections. Called before any `export`."""

    @abc.abstractmethod
    async def export(self, payload: bytes, records: int) -> ExportResult:
        """Send one payload once. Raise RetryableExportError or PermanentExportError on failure."""

    async def reconnected(self) -> None:
        """Return once a connection to upstream that the last failed `export` found down is up again, so
        a retry can go at once rather than wait out its backoff. The default never returns: without a
        connection to watch, the backoff alone paces the retries."""
        await asyncio.get_running_loop().create_future()

    async def shutdown(self) -> None:
        """Close connections. No `export` call follows."""
