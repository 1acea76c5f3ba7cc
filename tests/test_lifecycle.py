"""The proxy as a process: start-up on defaults, SIGTERM drains the queues and exits 0, or 3 when it
had to drop acknowledged records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

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


REPOSITORY = Path(__file__).resolve().parent.parent


def image_config(data: Path) -> dict[str, Any]:
    """docker/config.yaml as the image runs it, with its data directory moved to `data` (empty)."""
    text = (REPOSITORY / "docker" / "config.yaml").read_text()
    text = text.replace("/var/lib/lipservice", str(data))
    text = text.replace("/etc/lipservice/policies", str(REPOSITORY / "policies"))
    config: dict[str, Any] = yaml.safe_load(text)
    config["patterns"]["save_interval"] = "100ms"
    return config


def test_image_config_saves_pattern_state_into_an_empty_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = image_config(data)
    state_file = Path(config["patterns"]["state_file"])
    assert not state_file.parent.exists()  # as in the image and the chart: nothing creates patterns/
    with ProxyProcess(config, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, ({"body": f"user {i} logged in", "severity": "INFO"} for i in range(20)))
        wait_until(
            lambda: proxy.metric("lipservice_pattern_state_saves_total", {"outcome": "success"}) >= 2,
            what="periodic pattern state saves",
        )
        assert proxy.terminate() == 0
    assert b"user <NUM> logged in" in state_file.read_bytes()
    assert not [line for line in proxy.log_lines if line.get("level") == "error"]


def test_unwritable_pattern_state_is_logged_and_counted_and_shutdown_still_exits_zero(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a regular file where the data directory should be\n")
    config = image_config(tmp_path / "elsewhere")
    config["patterns"]["state_file"] = str(blocker / "patterns" / "state.json")
    with ProxyProcess(config, tmp_path) as proxy:
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, [{"body": "user 1 logged in", "severity": "INFO"}])
        # many failures: the periodic save outlives each, and the log says so only at a bounded rate
        failures = wait_until(
            lambda: (
                proxy.metric("lipservice_pattern_state_saves_total", {"outcome": "error"}) >= 15
                and proxy.metric("lipservice_pattern_state_saves_total", {"outcome": "error"})
            ),
            timeout=20,
            what="failed pattern state saves counted",
        )
        status, _ = http_get(proxy.admin_url + "/healthz")
        assert status == 200
        logged = [line["msg"] for line in proxy.log_lines if line.get("level") == "error"]
        assert 1 <= len(logged) < failures
        assert proxy.terminate() == 0
    errors = [line["msg"] for line in proxy.log_lines if line.get("level") == "error"]
    assert all(message.startswith("cannot save pattern state: ") for message in errors)
    assert str(blocker / "patterns" / "state.json") in errors[0]


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
