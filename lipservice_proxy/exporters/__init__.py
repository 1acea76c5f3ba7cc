"""Exporters: one upstream each (OTLP/gRPC, OTLP/HTTP, PostHog, debug output), built from config."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from ..config import (
    DebugExporterConfig,
    ExporterConfig,
    OtlpGrpcExporterConfig,
    OtlpHttpExporterConfig,
    PosthogExporterConfig,
)
from .base import ExportResult, LogExporter
from .debug import DebugExporter
from .otlp_grpc import OtlpGrpcExporter
from .otlp_http import OtlpHttpExporter
from .posthog import PosthogExporter

__all__ = ["ExportResult", "LogExporter", "build_exporter"]


def build_exporter(config: ExporterConfig, *, environ: Mapping[str, str] = os.environ) -> LogExporter:
    """The exporter a config entry describes. Raises ConfigError (e.g. a missing PostHog token)."""
    if isinstance(config, OtlpGrpcExporterConfig):
        return OtlpGrpcExporter(config)
    if isinstance(config, OtlpHttpExporterConfig):
        return OtlpHttpExporter.from_config(config)
    if isinstance(config, PosthogExporterConfig):
        return PosthogExporter.from_environment(config, environ)
    if isinstance(config, DebugExporterConfig):
        return DebugExporter(
            config.name or config.type, sys.stdout if config.stream == "stdout" else sys.stderr
        )
    raise TypeError(f"no exporter for {type(config).__name__}")
