"""The exporter registry: one `register_exporter` call makes a type valid in config, listed in the
message for an unknown type, and built (and fed kept records) by a running proxy."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.config import EXPORTER_TYPES, ExporterBase, ProxyConfig, load_config, register_exporter
from lipservice_proxy.errors import ConfigError
from lipservice_proxy.exporters import ExportResult, LogExporter, build_exporter

from .support.proxy import ProxyThread
from .support.sdk import emit, sdk_logger
from .support.waiting import wait_until


class ListExporterConfig(ExporterBase):
    type: Literal["list"]
    label: str = "records"


class ListExporter(LogExporter):
    """Keeps the bodies of the records it is handed, per exporter name, in this process."""

    bodies: ClassVar[dict[str, list[str]]] = {}

    @classmethod
    def from_config(cls, config: ListExporterConfig, environ: Mapping[str, str]) -> ListExporter:
        return cls(config.name)

    async def export(self, payload: bytes, records: int) -> ExportResult:
        request = ExportLogsServiceRequest.FromString(payload)
        self.bodies.setdefault(self.name, []).extend(
            record.body.string_value
            for resource in request.resource_logs
            for scope in resource.scope_logs
            for record in scope.log_records
        )
        return ExportResult()


@pytest.fixture
def list_type() -> Iterator[None]:
    register_exporter(ListExporterConfig, f"{__name__}:ListExporter.from_config")
    try:
        yield
    finally:
        del EXPORTER_TYPES["list"]
        ListExporter.bodies.clear()


def test_the_built_in_types_are_registered_and_each_factory_builds_its_exporter() -> None:
    assert list(EXPORTER_TYPES) == ["otlp_grpc", "otlp_http", "posthog", "debug"]
    config = ProxyConfig.model_validate(
        {
            "exporters": [
                {"type": "otlp_grpc", "endpoint": "http://127.0.0.1:1"},
                {"type": "otlp_http", "endpoint": "http://127.0.0.1:1/v1/logs"},
                {"type": "posthog", "host": "http://127.0.0.1:1"},
                {"type": "debug", "stream": "stderr"},
            ]
        }
    )
    built = [build_exporter(entry, environ={"POSTHOG_API_KEY": "phc_test"}) for entry in config.exporters]
    assert [type(exporter).__name__ for exporter in built] == [
        "OtlpGrpcExporter",
        "OtlpHttpExporter",
        "PosthogExporter",
        "DebugExporter",
    ]
    assert [exporter.name for exporter in built] == list(EXPORTER_TYPES)


def test_a_registered_type_is_accepted_listed_and_built(list_type: None, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("exporters: [{type: list, label: kept}, {type: list}, {type: kafka}]\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert str(error.value) == (
        f"{path}: exporters[2]: type must be one of otlp_grpc, otlp_http, posthog, debug, list (got 'kafka')"
    )
    path.write_text("exporters: [{type: list, label: kept}, {type: list}]\n")
    config = load_config(path, environ={})
    assert [(e.name, e.label) for e in config.exporters] == [("list", "kept"), ("list/1", "records")]  # type: ignore[attr-defined]
    assert isinstance(build_exporter(config.exporters[0]), ListExporter)
    path.write_text("exporters: [{type: list, lable: kept}]\n")
    with pytest.raises(ConfigError, match=r"exporters\[0\]\.lable: unknown key"):
        load_config(path, environ={})


def test_a_type_is_registered_once_and_names_its_factory(list_type: None) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_exporter(ListExporterConfig, f"{__name__}:ListExporter.from_config")

    class Unnamed(ExporterBase):
        type: str

    with pytest.raises(TypeError, match="Literal of one name"):
        register_exporter(Unnamed, f"{__name__}:ListExporter.from_config")

    class Other(ExporterBase):
        type: Literal["other"]

    with pytest.raises(ValueError, match="not module:attribute"):
        register_exporter(Other, "ListExporter")
    assert "other" not in EXPORTER_TYPES


def test_a_running_proxy_sends_kept_records_to_a_registered_type(list_type: None) -> None:
    with ProxyThread({"exporters": [{"type": "list", "queue": {"batch": {"timeout": "10ms"}}}]}) as proxy:
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, [{"body": f"payment {i} failed", "severity": "ERROR"} for i in range(3)])
        wait_until(
            lambda: len(ListExporter.bodies.get("list", [])) == 3, what="3 records in the list exporter"
        )
    assert ListExporter.bodies["list"] == [f"payment {i} failed" for i in range(3)]
