"""The OpenTelemetry JS SDK's log exporters (gRPC, HTTP/JSON, HTTP/protobuf; gzip or not) as clients of
the proxy: maps, unicode and every attribute type arrive at the sink as the application emitted them,
annotated. The JS side is tests/js/send_logs.cjs with the packages pinned in tests/js/package.json,
installed by scripts/setup.sh (npm ci)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from .support.proxy import ProxyThread, sink_exporter
from .support.sink import SinkThread
from .test_interop_otelcol import assert_annotated, plain

pytestmark = pytest.mark.node

JS_DIR = Path(__file__).parent / "js"
COUNT = 300


def emitted(value: Any) -> Any:
    """A value as send_logs.cjs printed it, in the form `plain` gives an AnyValue."""
    if isinstance(value, dict):
        if set(value) == {"bytes"}:
            return bytes(value["bytes"])
        return {key: emitted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [emitted(item) for item in value]
    return value


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [
        ("grpc", "none"),
        ("grpc", "gzip"),
        ("http-json", "none"),
        ("http-json", "gzip"),
        ("http-protobuf", "gzip"),
    ],
)
def test_js_sdk_exporter_through_the_proxy(protocol: str, compression: str, sink: SinkThread) -> None:
    config = {"sampler": {"dry_run": True}, "exporters": [sink_exporter(sink.sink.grpc_endpoint)]}
    with ProxyThread(config) as proxy:
        url = f"http://{proxy.grpc_endpoint}" if protocol == "grpc" else f"{proxy.http_url}/v1/logs"
        result = subprocess.run(
            ["node", str(JS_DIR / "send_logs.cjs"), protocol, url, compression, str(COUNT)],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
        received = sink.wait_for_records(COUNT, timeout=30)
    sent = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(sent) == len(received) == COUNT
    by_index = {}
    for entry in received:
        attrs = {kv.key: plain(kv.value) for kv in entry.record.attributes}
        by_index[attrs["app.int"]] = (entry, attrs)
    for index, record in enumerate(sent):
        entry, attrs = by_index[index]
        assert_annotated(attrs)
        assert {key: value for key, value in attrs.items() if key.startswith("app.")} == emitted(
            record["attributes"]
        )
        assert plain(entry.record.body) == emitted(record["body"])
        assert (entry.record.severity_number, entry.record.severity_text) == (
            record["severityNumber"],
            record["severityText"],
        )
        assert {kv.key: plain(kv.value) for kv in entry.resource.attributes}["service.name"] == "js-shop"
        assert (entry.scope.name, entry.scope.version) == ("js-client", "1.2.3")
