"""The analysis loop left on in a real proxy process: passes on a fixed grid, and stderr stays JSON
lines while gRPC is busy and the clustering child is started every pass (a fork() there made gRPC
print "fork_posix.cc ... skipping fork() handlers" lines)."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

from lipservice_proxy.analysis.loop import next_tick

from .support.otlp_samples import log_request
from .support.proxy import ProxyProcess, http_get
from .support.waiting import wait_until


@pytest.mark.parametrize(
    ("tick", "now", "expected"),
    [(10.0, 10.3, 15.0), (10.0, 14.99, 15.0), (10.0, 15.0, 20.0), (10.0, 27.0, 30.0)],
)
def test_the_next_pass_stays_on_the_grid_and_skips_overrun_ticks(
    tick: float, now: float, expected: float
) -> None:
    assert next_tick(tick, 5.0, now) == expected


def analysis_passes(proxy: ProxyProcess) -> float:
    status, body = http_get(f"{proxy.admin_url}/metrics")
    assert status == 200
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("lipservice_analysis_runs_total{")
    )


def test_stderr_stays_json_lines_while_passes_run_under_grpc_load(tmp_path: Path) -> None:
    config = {
        "analysis": {"enabled": True, "interval": "1s", "policy_file": str(tmp_path / "generated.yaml")},
        "exporters": [{"type": "debug", "stream": "stdout"}],
    }
    with ProxyProcess(config, tmp_path) as proxy:
        stop = threading.Event()

        def send() -> None:
            with grpc.insecure_channel(proxy.grpc_endpoint) as channel:
                stub = logs_service_pb2_grpc.LogsServiceStub(channel)
                for number in range(100_000):
                    if stop.is_set():
                        return
                    stub.Export(log_request("HDFS", 200, seed=number), timeout=10)

        senders = [threading.Thread(target=send) for _ in range(2)]
        for sender in senders:
            sender.start()
        try:
            wait_until(lambda: analysis_passes(proxy) >= 4, timeout=60, what="four analysis passes")
        finally:
            stop.set()
            for sender in senders:
                sender.join(30)
        assert proxy.terminate() == 0
    not_json = [entry["msg"] for entry in proxy.log_lines if set(entry) == {"msg"}]  # see ProxyProcess
    assert not_json == [], not_json[:3]
