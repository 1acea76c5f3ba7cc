"""`lipservice-proxy run --workers N`: N processes share the receiver ports (SO_REUSEPORT), one admin
endpoint serves metrics that add up across them, a dead worker is replaced, SIGTERM drains every
worker and exits 0, and no worker outlives a killed parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lipservice_proxy.config import load_config
from lipservice_proxy.fleet.workers import worker_environment

from .support.otlp_samples import log_request
from .support.proxy import ProxyProcess, http_get, loopback_config, sink_exporter
from .support.sink import SinkThread
from .support.waiting import wait_until

KEEP_ALL = "version: 1\nseverity_rates: {TRACE: 1, DEBUG: 1, INFO: 1, WARN: 1}\n"
EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
CONNECTIONS = 16
RECORDS_PER_CALL = 100


@pytest.fixture
def sink() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


def workers_proxy(tmp_path: Path, sink: SinkThread, workers: int = 2, **exporter: Any) -> ProxyProcess:
    (tmp_path / "policy.yaml").write_text(KEEP_ALL)
    config = {
        "sampler": {"policy_file": "policy.yaml"},
        "exporters": [sink_exporter(sink.sink.grpc_endpoint, **exporter)],
    }
    return ProxyProcess(config, tmp_path, args=["--workers", str(workers)])


def export_over_many_connections(endpoint: str, calls: int = CONNECTIONS, seed: int = 0) -> int:
    """One Export call on each of `calls` fresh connections; returns the records sent."""
    for index in range(calls):
        channel = grpc.insecure_channel(endpoint, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            body = log_request("HDFS", RECORDS_PER_CALL, seed=seed + index).SerializeToString()
            channel.unary_unary(EXPORT)(body, timeout=10)
        finally:
            channel.close()
    return calls * RECORDS_PER_CALL


def get_json(proxy: ProxyProcess, path: str) -> Any:
    status, body = http_get(proxy.admin_url + path)
    assert status == 200, body
    return orjson.loads(body)


def metric_sums(text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def worker_pids(proxy: ProxyProcess) -> list[int]:
    return [worker["pid"] for worker in get_json(proxy, "/api/v1/workers")["workers"]]


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workers_share_the_ports_and_one_admin_endpoint_sums_their_metrics(
    tmp_path: Path, sink: SinkThread
) -> None:
    with workers_proxy(tmp_path, sink) as proxy:
        assert http_get(proxy.admin_url + "/readyz")[0] == 200
        workers = get_json(proxy, "/api/v1/workers")["workers"]
        assert [(w["index"], w["alive"], w["restarts"]) for w in workers] == [(0, True, 0), (1, True, 0)]
        assert proxy.process is not None and proxy.process.pid not in [w["pid"] for w in workers]

        sent = export_over_many_connections(proxy.grpc_endpoint)
        sink.wait_for_records(sent, timeout=30)

        def reported() -> dict[str, int]:
            return {
                s["sampler_id"].rsplit("/", 1)[1]: s["records"]
                for s in get_json(proxy, "/api/v1/fleet")["samplers"]
            }

        wait_until(lambda: sum(reported().values()) == sent, 10, what="both workers' reports")
        assert all(reported()[f"w{i}"] > 0 for i in range(2)), (
            f"one worker got every connection: {reported()}"
        )

        status, body = http_get(proxy.admin_url + "/metrics")
        assert status == 200
        text = body.decode()
        sums = metric_sums(text)
        assert sums["lipservice_log_records_received_total"] == sent
        assert sums["lipservice_log_records_kept_total"] == sent
        assert sums["lipservice_export_records_total"] == sent
        assert sums["lipservice_receiver_requests_total"] == CONNECTIONS
        assert sums["lipservice_fleet_connected"] == 2 and sums["lipservice_fleet_samplers"] == 2
        assert sums["lipservice_policy_version"] == 1
        assert text.count("\nlipservice_build_info{") == 1
        assert "pid=" not in text  # every gauge sums (or maxes) over the processes: no per-process series
        check = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert proxy.terminate() == 0


def test_a_dead_worker_is_replaced_and_sigterm_drains_every_worker(tmp_path: Path, sink: SinkThread) -> None:
    with workers_proxy(tmp_path, sink, queue={"num_senders": 1, "batch": {"max_records": 50}}) as proxy:
        first = worker_pids(proxy)
        os.kill(first[0], signal.SIGKILL)
        wait_until(lambda: worker_pids(proxy)[0] != first[0], 30, what="worker 0 replaced")
        wait_until(lambda: all(w["alive"] for w in get_json(proxy, "/api/v1/workers")["workers"]), 30)
        replaced = get_json(proxy, "/api/v1/workers")["workers"]
        assert [(w["restarts"], w["pid"] == first[1]) for w in replaced] == [(1, False), (0, True)]
        wait_until(
            lambda: (
                metric_sums(http_get(proxy.admin_url + "/metrics")[1].decode())["lipservice_fleet_connected"]
                == 2
            ),
            30,
            what="the new worker on the policy stream",
        )
        assert (
            metric_sums(http_get(proxy.admin_url + "/metrics")[1].decode())[
                "lipservice_worker_restarts_total"
            ]
            == 1
        )

        sink.sink.set_delay(0.3)  # a slow upstream: records are still queued when SIGTERM arrives
        sent = export_over_many_connections(proxy.grpc_endpoint, calls=8)
        assert sink.sink.log_record_count < sent
        pids = worker_pids(proxy)
        assert proxy.terminate(timeout=60) == 0
    assert sink.sink.log_record_count == sent  # every worker drained its queue before exiting
    assert all(gone(pid) for pid in pids)


def test_records_a_worker_drops_at_shutdown_make_the_parent_exit_3(tmp_path: Path, sink: SinkThread) -> None:
    sink.sink.fail_grpc(grpc.StatusCode.UNAVAILABLE)  # upstream down throughout: the memory queues keep all
    with workers_proxy(tmp_path, sink) as proxy:
        sent = export_over_many_connections(proxy.grpc_endpoint, calls=8)
        assert proxy.terminate(timeout=60) == 3
    assert sink.sink.log_record_count == 0
    errors = [line.get("msg", "") for line in proxy.log_lines if line.get("level") == "error"]
    assert f"stopped; {sent} acknowledged records were dropped at shutdown" in errors, errors


def test_workers_do_not_outlive_a_killed_parent(tmp_path: Path, sink: SinkThread) -> None:
    with workers_proxy(tmp_path, sink) as proxy:
        pids = worker_pids(proxy)
        proxy.kill()
        wait_until(lambda: all(gone(pid) for pid in pids), 20, what="the orphaned workers to stop")


def test_a_receiver_port_in_use_fails_the_start_with_its_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = loopback_config({"receivers": {"grpc": {"endpoint": f"127.0.0.1:{port}"}}})
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        result = subprocess.run(
            [sys.executable, "-m", "lipservice_proxy.cli", "run", "-c", "config.yaml", "--workers", "2"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"receivers.grpc.endpoint: 127.0.0.1:{port} is already in use" in result.stderr


def test_a_worker_that_cannot_start_fails_the_start_with_its_reason(tmp_path: Path) -> None:
    config = loopback_config({"exporters": [{"type": "posthog", "api_key_env": "LIPSERVICE_TEST_UNSET_KEY"}]})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    environment = {k: v for k, v in os.environ.items() if k != "LIPSERVICE_TEST_UNSET_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "lipservice_proxy.cli", "run", "-c", "config.yaml", "--workers", "2"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "environment variable LIPSERVICE_TEST_UNSET_KEY is not set" in result.stderr  # the worker's
    assert "exited with status 2 while starting" in result.stderr  # the parent's
    assert "lipservice-proxy ready" not in result.stderr


def test_each_worker_gets_its_own_files_ports_and_share_of_memory(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "exporters": [
                    {"type": "debug"},
                    {"type": "otlp_grpc", "endpoint": "c:4317", "queue": {"directory": "/data/queue/otlp"}},
                ],
                "patterns": {"state_file": "/data/patterns/state.json"},
                "memory_limiter": {"limit_mib": 1000, "spike_limit_mib": 200},
                "fleet": {"report_interval": "30s"},
            }
        )
    )
    config = load_config(config_file, environ={})
    environment = worker_environment(
        config,
        1,
        4,
        endpoints={"grpc": "0.0.0.0:4317", "http": "0.0.0.0:4318"},
        analyzer="127.0.0.1:40000",
        sampler_id="node-a/w1",
    )
    worker = load_config(config_file, environ=environment)
    assert worker.exporters[1].queue.directory == Path("/data/queue/otlp.w1")
    assert worker.patterns.state_file == Path("/data/patterns/state.w1.json")
    assert (worker.receivers.grpc.endpoint, worker.receivers.http.endpoint) == (
        "0.0.0.0:4317",
        "0.0.0.0:4318",
    )
    assert worker.admin.enabled is False
    assert (worker.fleet.analyzer, worker.fleet.sampler_id, worker.fleet.report_interval) == (
        "127.0.0.1:40000",
        "node-a/w1",
        1.0,
    )
    assert (worker.memory_limiter.limit_mib, worker.memory_limiter.spike_limit_mib) == (250, 50)
