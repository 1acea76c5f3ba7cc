"""Debug exporter: one OTLP/JSON line per payload that parses back to the same records; a closed
pipe never raises."""

from __future__ import annotations

import asyncio
import io
import logging
import os

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.config import DebugExporterConfig
from lipservice_proxy.errors import PermanentExportError
from lipservice_proxy.exporters import build_exporter
from lipservice_proxy.exporters.base import ExportResult, LogExporter
from lipservice_proxy.exporters.debug import DebugExporter
from lipservice_proxy.otlp.json_codec import json_to_message
from tests.support.otlp_samples import log_request


async def export_all(exporter: LogExporter, payloads: list[bytes]) -> list[ExportResult]:
    await exporter.start()
    try:
        return [await exporter.export(payload, 0) for payload in payloads]
    finally:
        await exporter.shutdown()


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_lines_parse_back_to_the_same_records(capsys: pytest.CaptureFixture[str], stream: str) -> None:
    requests = [log_request("HDFS", 40, seed=1), log_request("OpenSSH", 25, seed=2)]
    exporter = build_exporter(DebugExporterConfig(type="debug", stream=stream))  # type: ignore[arg-type]
    results = asyncio.run(export_all(exporter, [request.SerializeToString() for request in requests]))
    assert results == [ExportResult(), ExportResult()]
    captured = capsys.readouterr()
    lines = (captured.out if stream == "stdout" else captured.err).splitlines()
    assert [json_to_message(line.encode(), ExportLogsServiceRequest) for line in lines] == requests


def test_concatenated_payload_is_one_merged_line() -> None:
    first, second = log_request("HDFS", 3, seed=1), log_request("HDFS", 4, seed=2)
    output = io.StringIO()
    asyncio.run(
        export_all(DebugExporter("debug", output), [first.SerializeToString() + second.SerializeToString()])
    )
    [line] = output.getvalue().splitlines()
    merged = ExportLogsServiceRequest()
    merged.MergeFrom(first)
    merged.MergeFrom(second)
    assert json_to_message(line.encode(), ExportLogsServiceRequest) == merged


def test_closed_pipe_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w", encoding="utf-8") as stream, caplog.at_level(logging.WARNING):
        exporter = DebugExporter("debug", stream)
        payloads = [log_request(records=2).SerializeToString()] * 3
        assert asyncio.run(export_all(exporter, payloads)) == [ExportResult()] * 3
    warnings = [record for record in caplog.records if "cannot write debug output" in record.getMessage()]
    assert len(warnings) == 1


def test_garbage_payload_is_a_permanent_error() -> None:
    with pytest.raises(PermanentExportError, match="not a serialized ExportLogsServiceRequest"):
        asyncio.run(export_all(DebugExporter("debug", io.StringIO()), [b"\xff\xff\xff"]))
