"""What the exporter tests share: one export attempt at a time, through `build_exporter`."""

from __future__ import annotations

import asyncio

import pytest

from lipservice_proxy.config import ExporterConfig
from lipservice_proxy.errors import ExportError
from lipservice_proxy.exporters import build_exporter
from lipservice_proxy.exporters.base import ExportResult


async def export_once(config: ExporterConfig, payload: bytes, records: int = 0) -> ExportResult:
    """Start an exporter, make one attempt, shut it down."""
    exporter = build_exporter(config)
    await exporter.start()
    try:
        return await exporter.export(payload, records)
    finally:
        await exporter.shutdown()


def export_error(config: ExporterConfig, payload: bytes = b"") -> ExportError:
    """The error one attempt raises (the test fails if it succeeds)."""
    with pytest.raises(ExportError) as caught:
        asyncio.run(export_once(config, payload))
    return caught.value
