"""Exporters: one upstream each (OTLP/gRPC, OTLP/HTTP, PostHog, debug output), built from config by the
factory their type is registered with (`config.EXPORTER_TYPES`)."""

from __future__ import annotations

import os
import pkgutil
from collections.abc import Mapping
from typing import Any

from ..config import EXPORTER_TYPES, ExporterBase
from .base import ExportResult, LogExporter

__all__ = ["ExportResult", "LogExporter", "build_exporter"]


def build_exporter(config: ExporterBase, *, environ: Mapping[str, str] = os.environ) -> LogExporter:
    """The exporter a config entry describes. Raises ConfigError (e.g. a missing PostHog token)."""
    reference = EXPORTER_TYPES[config.type].factory
    factory: Any = pkgutil.resolve_name(reference)
    exporter = factory(config, environ)
    if not isinstance(exporter, LogExporter):
        raise TypeError(f"exporter type {config.type!r}: {reference} made a {type(exporter).__name__}")
    return exporter
