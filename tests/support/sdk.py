"""The real OpenTelemetry Python SDK as the proxy's client: logs emitted through its OTLP exporters."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import Logger, LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

SEVERITY_NUMBERS = {
    "TRACE": SeverityNumber.TRACE,
    "DEBUG": SeverityNumber.DEBUG,
    "INFO": SeverityNumber.INFO,
    "WARN": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
    "FATAL": SeverityNumber.FATAL,
}


@contextmanager
def sdk_logger(
    endpoint: str,
    *,
    protocol: str = "grpc",
    gzip: bool = False,
    service: str = "checkout",
    headers: Mapping[str, str] | None = None,
    batch_size: int = 512,
) -> Iterator[Logger]:
    """A logger whose records go through the SDK's batch processor and OTLP exporter to `endpoint`.

    gRPC: endpoint "127.0.0.1:PORT"; HTTP: the base URL "http://127.0.0.1:PORT". Flushes on exit.
    """
    if protocol == "grpc":
        import grpc

        exporter: Any = GrpcLogExporter(
            endpoint=f"http://{endpoint}",
            insecure=True,
            headers=dict(headers or {}),
            compression=grpc.Compression.Gzip if gzip else None,
            timeout=10,
        )
    else:
        exporter = HttpLogExporter(
            endpoint=f"{endpoint}/v1/logs",
            headers=dict(headers or {}),
            compression=HttpCompression.Gzip if gzip else HttpCompression.NoCompression,
            timeout=10,
        )
    provider = LoggerProvider(
        resource=Resource.create({"service.name": service, "deployment.environment": "test"})
    )
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, max_export_batch_size=batch_size, schedule_delay_millis=50)
    )
    try:
        yield provider.get_logger("tests.sdk", "1.0")
    finally:
        provider.force_flush(30_000)
        provider.shutdown()


def emit(logger: Logger, records: Iterable[Mapping[str, Any]]) -> int:
    """Emit records given as dicts: body, severity (name), attributes, trace_id/span_id (ints)."""
    count = 0
    for spec in records:
        severity = spec.get("severity")
        logger.emit(
            LogRecord(
                body=spec["body"],
                severity_number=SEVERITY_NUMBERS[severity] if severity else None,
                severity_text=severity,
                attributes=dict(spec.get("attributes", {})),
                trace_id=spec.get("trace_id"),
                span_id=spec.get("span_id"),
                timestamp=spec.get("timestamp"),
            )
        )
        count += 1
    return count
