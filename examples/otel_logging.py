"""The only OpenTelemetry set-up the example apps need: Python logging -> the OTel SDK -> OTLP.

The exporter reads its endpoint from OTEL_EXPORTER_OTLP_ENDPOINT (http://127.0.0.1:4317 for a
lipservice-proxy on this machine); nothing in the apps knows the proxy is there.

Two settings differ from the SDK's defaults, both so that no log record is lost on the way:

- The batch queue. The SDK holds records in a queue of 2,048 and drops what does not fit ("Queue
  full, dropping Log."): a burst (a batch job, an error storm, start-up while the proxy is not up
  yet and the exporter is retrying) loses records before they reach the proxy, and nothing on the
  proxy's side can count them. 32,768 records (a few tens of MiB at most) ride out such a burst;
  batches of 1,024 match the proxy's own batches upstream. OTEL_BLRP_* variables still override.
- The SDK's own log lines go to stderr, not back through the SDK: a warning it logs while handling
  a record (a full queue, an attribute it cannot send) would re-enter the handler, which then skips
  it ("LoggingHandler.emit detected recursive logging").
"""

from __future__ import annotations

import logging
import os

from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

BATCH_DEFAULTS = {
    "OTEL_BLRP_MAX_QUEUE_SIZE": 32_768,
    "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": 1_024,
    "OTEL_BLRP_SCHEDULE_DELAY": 500,  # milliseconds
}
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _batch_setting(name: str) -> int:
    return int(os.environ.get(name, BATCH_DEFAULTS[name]))


def _attribute_value(value: object) -> bool:
    """Whether OpenTelemetry can send `value` as a log attribute as it is."""
    if isinstance(value, list | tuple):
        return all(isinstance(item, str | bool | int | float) for item in value)
    return isinstance(value, str | bool | int | float)


class OtlpLoggingHandler(LoggingHandler):
    """The SDK's logging handler, for records whose extra fields may be any Python object: Django's
    request log records carry the request itself (`extra={"request": request}`), which no attribute can
    hold. Such values are sent as their str(), on a copy of the record (other handlers see the original)."""

    def emit(self, record: logging.LogRecord) -> None:
        odd = {
            key: str(value)
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRIBUTES and value is not None and not _attribute_value(value)
        }
        super().emit(logging.makeLogRecord({**vars(record), **odd}) if odd else record)


def send_logs_to_otlp(service_name: str, level: int = logging.DEBUG) -> LoggerProvider:
    provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_log_record_processor(
        BatchLogRecordProcessor(
            OTLPLogExporter(),
            max_queue_size=_batch_setting("OTEL_BLRP_MAX_QUEUE_SIZE"),
            max_export_batch_size=_batch_setting("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"),
            schedule_delay_millis=_batch_setting("OTEL_BLRP_SCHEDULE_DELAY"),
        )
    )
    set_logger_provider(provider)
    sdk_logs = logging.getLogger("opentelemetry")
    sdk_logs.addHandler(logging.StreamHandler())
    sdk_logs.propagate = False
    root = logging.getLogger()
    root.addHandler(OtlpLoggingHandler(logger_provider=provider))
    root.setLevel(level)
    return provider
