"""Debug exporter: kept records printed as OTLP/JSON Lines, one `ExportLogsServiceRequest` per line.

This is the format of the Collector's file exporter, so a line can be fed back to any OTLP/JSON
consumer (`lipservice-proxy replay`, `curl -d @line /v1/logs`). Each payload becomes one line, flushed
at once. When the reader goes away (a closed pipe) the output is discarded with one warning and the
exporter keeps succeeding: debug output must never stop the proxy.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ..config import DebugExporterConfig
from ..errors import PermanentExportError
from ..receivers.otlp_json import message_to_json
from .base import ExportResult, LogExporter

log = logging.getLogger(__name__)


class DebugExporter(LogExporter):
    def __init__(self, name: str, stream: TextIO) -> None:
        super().__init__(name)
        self._stream = stream
        self._discarding = False

    @classmethod
    def from_config(cls, config: DebugExporterConfig, environ: Mapping[str, str]) -> DebugExporter:
        return cls(config.name, sys.stdout if config.stream == "stdout" else sys.stderr)

    async def export(self, payload: bytes, records: int) -> ExportResult:
        try:
            request = ExportLogsServiceRequest.FromString(payload)
        except DecodeError:
            raise PermanentExportError("payload is not a serialized ExportLogsServiceRequest") from None
        if not self._discarding:
            self._write(message_to_json(request).decode("utf-8") + "\n")
        return ExportResult()

    def _write(self, line: str) -> None:
        try:
            self._stream.write(line)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # a closed pipe (EPIPE) or a closed stream
            self._discarding = True
            log.warning(
                "exporter %s: cannot write debug output (%s); discarding it from now on", self.name, exc
            )
            self._silence_stream()

    def _silence_stream(self) -> None:
        # Point the dead descriptor at /dev/null so the interpreter's final flush does not fail again.
        try:
            descriptor = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError):
            return
        try:
            os.dup2(devnull, descriptor)
        finally:
            os.close(devnull)
