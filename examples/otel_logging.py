"""The only OpenTelemetry set-up the example apps need: Python logging -> the OTel SDK -> OTLP.

The exporter reads its endpoint from OTEL_EXPORTER_OTLP_ENDPOINT (http://127.0.0.1:4317 for a
lipservice-proxy on this machine); nothing in the apps knows the proxy is there.
"""

from __future__ import annotations

import logging

from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource


def send_logs_to_otlp(service_name: str, level: int = logging.DEBUG) -> LoggerProvider:
    provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    set_logger_provider(provider)
    root = logging.getLogger()
    root.addHandler(LoggingHandler(logger_provider=provider))
    root.setLevel(level)
    return provider
