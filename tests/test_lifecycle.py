"""The proxy as a process: start-up on defaults, SIGTERM drains the queues and exits 0, or 3 when it
had to drop acknowledged records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from .support.proxy import ProxyProcess, http_get, sink_exporter
from .support.sdk import emit, sdk_logger
from .support.sink import SinkThread
from .support.waiting import wait_until

KEEP_ALL = "version: 1\nseverity_rates: {TRACE: 1, DEBUG: 1, INFO: 1, WARN: 1}\n"


@pytest.fixture
def sink() -> Any:
    with SinkThread() as running:
        yield running


def test_sigterm_flushes_queued_records_then_exits_zero(tmp_path: Path, sink: SinkThread) -> None:
    (tmp_path / "policy.yaml").write_text(KEEP_ALL)
    sink.sink.set_delay(0.3)  # a slow upstream: records are still queued when SIGTERM arrives
    config = {
        "sampler": {"policy_file": "policy.yaml"},
        "exporters": [
            sink_exporter(sink.sink.grpc_endpoint, queue={"num_senders": 1, "batch": {"max_records": 50}})
        ],
    }
    with ProxyProcess(config, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint, batch_size=50) as logger:
            emit(logger, ({"body": f"order {i} shipped", "severity": "INFO"} for i in range(500)))
        status, body = http_get(proxy.admin_url + "/metrics")
        assert (
            status == 200
            and b'lipservice_log_records_received_total{service="checkout",severity="INFO"} 500.0' in body
        )
        assert sink.sink.log_record_count < 500  # the queue still holds records
        assert proxy.terminate(timeout=60) == 0
    assert sink.sink.log_record_count == 500
    messages = [line.get("msg", "") for line in proxy.log_lines]
    assert any("shutting down" in message for message in messages)


def test_runs_on_embedded_defaults(tmp_path: Path) -> None:
    """Only loopback ports configured: debug exporter on stdout, built-in policy (no policies/ here)."""
    with ProxyProcess({}, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, [{"body": "payment 1 failed", "severity": "ERROR"}])
        stdout = tmp_path / "stdout.log"
        wait_until(lambda: b"payment 1 failed" in stdout.read_bytes(), what="the debug exporter's line")
        status, body = http_get(proxy.admin_url + "/api/v1/policy")
        assert status == 200 and b"built-in default" in body
        assert proxy.terminate() == 0


def test_sigterm_that_drops_acknowledged_records_exits_3_and_says_how_to_keep_them(
    tmp_path: Path, sink: SinkThread
) -> None:
    (tmp_path / "policy.yaml").write_text(KEEP_ALL)
    sink.sink.fail_grpc(grpc.StatusCode.UNAVAILABLE)  # upstream down for the whole run
    config = {
        "sampler": {"policy_file": "policy.yaml"},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint)],  # a memory queue, 30 s of retries
    }
    with ProxyProcess(config, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint, batch_size=50) as logger:
            emit(logger, ({"body": f"order {i} shipped", "severity": "INFO"} for i in range(300)))
        status, body = http_get(proxy.admin_url + "/metrics")
        assert status == 200
        assert b'lipservice_log_records_received_total{service="checkout",severity="INFO"} 300.0' in body
        assert proxy.terminate(timeout=60) == 3
    assert sink.sink.log_record_count == 0
    errors = [line.get("msg", "") for line in proxy.log_lines if line.get("level") == "error"]
    assert any(
        "shutdown deadline passed with 300 acknowledged records unsent" in message
        and "queue.directory (the disk queue)" in message
        for message in errors
    ), errors
    assert any("300 acknowledged records were dropped at shutdown" in message for message in errors), errors
