"""The memory limiter: refuses above the soft limit, recovers below it, collects garbage above the hard
limit; against this process's real RSS, and through a running proxy as retryable refusals."""

from __future__ import annotations

import gc
import http.client
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo

from lipservice_proxy.config import MIB, MemoryLimiterConfig
from lipservice_proxy.errors import Backpressure
from lipservice_proxy.memlimit import MemoryLimiter, read_rss_bytes
from lipservice_proxy.telemetry import Telemetry
from tests.support.delivery import KEEP_ALL_POLICY, logs_request
from tests.support.proxy import ProxyThread, sink_exporter
from tests.support.sink import SinkThread


def refusals(telemetry: Telemetry) -> float:
    return telemetry.registry.get_sample_value("lipservice_memory_limiter_refusals_total") or 0.0


def test_rss_is_read_from_proc() -> None:
    rss = read_rss_bytes()
    assert rss is not None and 10 * MIB < rss < 64 * 1024 * MIB


def test_soft_limit_refuses_and_hard_limit_collects() -> None:
    readings = iter([700, 900, 1100, 1050, 1100, 300])  # MiB; soft limit 800, hard limit 1000
    telemetry = Telemetry()
    config = MemoryLimiterConfig(limit_mib=1000, spike_limit_mib=200)
    limiter = MemoryLimiter(config, telemetry, read_rss=lambda: next(readings) * MIB)
    limiter.measure()  # 700: under the soft limit
    limiter.check()
    limiter.measure()  # 900: over the soft limit
    with pytest.raises(Backpressure) as refused:
        limiter.check()
    assert "900 MiB is over the soft limit of 800 MiB" in str(refused.value)
    collections = gc.get_count()
    limiter.measure()  # 1100: over the hard limit, so collected and read again: 1050, still refusing
    assert gc.get_count() <= collections  # the generation counters were reset by gc.collect()
    with pytest.raises(Backpressure):
        limiter.check()
    limiter.measure()  # 1100, collected, then 300: accepting again
    limiter.check()
    assert refusals(telemetry) == 2


def test_real_memory_growth_is_refused_until_it_is_released() -> None:
    telemetry = Telemetry()
    baseline = read_rss_bytes()
    assert baseline is not None
    config = MemoryLimiterConfig(
        limit_mib=baseline / MIB + 160, spike_limit_mib=96
    )  # soft: baseline + 64 MiB
    limiter = MemoryLimiter(config, telemetry)
    limiter.measure()
    limiter.check()
    ballast = b"\x01" * (128 * MIB)  # touched pages: real resident memory
    limiter.measure()
    with pytest.raises(Backpressure, match="over the soft limit"):
        limiter.check()
    assert refusals(telemetry) == 1
    del ballast
    limiter.measure()  # a large bytes object goes back to the system when freed
    limiter.check()
    assert refusals(telemetry) == 1


def test_a_proxy_over_its_memory_limit_answers_503_with_retry_after(tmp_path: Path) -> None:
    policy = tmp_path / "keep-all.yaml"
    policy.write_text(KEEP_ALL_POLICY)
    baseline = read_rss_bytes()
    assert baseline is not None
    with SinkThread() as sink:
        config = {
            "sampler": {"policy_file": str(policy)},
            "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
            "memory_limiter": {"limit_mib": 64, "spike_limit_mib": 16, "check_interval": "50ms"},
        }
        assert baseline > 64 * MIB  # this process is already over the limit
        with ProxyThread(config) as proxy:
            body = logs_request(range(10)).SerializeToString()
            connection = http.client.HTTPConnection("127.0.0.1", proxy.running.ports["http"], timeout=10)

            def post() -> http.client.HTTPResponse:
                connection.request("POST", "/v1/logs", body, {"Content-Type": "application/x-protobuf"})
                response = connection.getresponse()
                response.read()
                return response

            response = post()  # the limiter measured before the receivers opened
            assert response.status == 503 and response.getheader("Retry-After") == "1"
            with grpc.insecure_channel(proxy.grpc_endpoint) as channel:
                export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
                with pytest.raises(grpc.RpcError) as refused:
                    export(body, timeout=10)
            error: Any = refused.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            trailers = dict(error.trailing_metadata())
            assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
            status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
            assert status.details[0].Is(RetryInfo.DESCRIPTOR)
            assert proxy.metric("lipservice_memory_limiter_refusals_total") == 2
            assert (
                proxy.metric(
                    "lipservice_log_records_received_total", {"service": "delivery", "severity": "INFO"}
                )
                == 0
            )
            connection.close()
        assert sink.sink.log_record_count == 0
