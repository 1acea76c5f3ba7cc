"""The example apps (FastAPI, Flask, Django) run as they would for a user, configured with nothing but
OTEL_EXPORTER_OTLP_ENDPOINT; their logs go through the SDK's logging handler to a real proxy, and
arrive at a real sink sampled: fewer records, each standing for its share of the original count."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lipservice_proxy.sampling.annotate import SAMPLE_RATE

from .support.proxy import ProxyThread, sink_exporter
from .support.sink import LogEntry, SinkThread
from .support.waiting import wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ORDERS = 200  # INFO: sampled at the default policy's 0.2
PAYMENTS = 40  # every tenth an ERROR (always kept), the rest WARN (0.5)


@pytest.fixture(scope="module")
def pipeline() -> Iterator[tuple[SinkThread, ProxyThread]]:
    with SinkThread() as sink:
        config = {
            "sampler": {"policy_file": "/nonexistent/policy.yaml"},  # the built-in default rates
            "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
        }
        with ProxyThread(config) as proxy:
            yield sink, proxy


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def request(url: str, method: str = "GET") -> int:
    data = b"" if method == "POST" else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, method=method), timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def shop_records(sink: SinkThread, service: str) -> list[LogEntry]:
    return [
        entry
        for entry in sink.sink.log_records()
        if entry.scope.name == "shop"
        and any(
            a.key == "service.name" and a.value.string_value == service for a in entry.resource.attributes
        )
    ]


def weight(entry: LogEntry) -> float:
    return next(a.value.double_value for a in entry.record.attributes if a.key == SAMPLE_RATE)


def arrived(sink: SinkThread, service: str) -> bool:
    """Every ERROR, and kept INFO records standing for (nearly) every order."""
    records = shop_records(sink, service)
    errors = sum(entry.record.severity_text == "ERROR" for entry in records)
    orders = sum(weight(entry) for entry in records if entry.record.severity_text == "INFO")
    return errors == PAYMENTS // 10 and orders >= ORDERS - 5


@pytest.mark.parametrize(
    ("script", "service"),
    [("fastapi_shop.py", "fastapi-shop"), ("flask_shop.py", "flask-shop"), ("django_shop.py", "django-shop")],
)
def test_the_example_app_logs_arrive_sampled_at_the_sink(
    pipeline: tuple[SinkThread, ProxyThread], script: str, service: str, tmp_path: Path
) -> None:
    sink, proxy = pipeline
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    environment |= {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{proxy.grpc_endpoint}", "PORT": str(port)}
    with (tmp_path / "app.log").open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script)], env=environment, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            wait_until(
                lambda: request(base + "/healthz") == 200 or process.poll() is not None, 60, what="the app"
            )
            assert process.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            for order in range(1, ORDERS + 1):
                assert request(f"{base}/orders/{order}?user=u{order}") == 200
            statuses = [request(f"{base}/orders/{order}/pay", "POST") for order in range(1, PAYMENTS + 1)]
            assert statuses.count(502) == PAYMENTS // 10

            wait_until(lambda: arrived(sink, service), 30, what=f"{service}'s records at the sink")
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    records = shop_records(sink, service)
    by_severity: dict[str, list[LogEntry]] = {}
    for entry in records:
        by_severity.setdefault(entry.record.severity_text, []).append(entry)
    infos = by_severity["INFO"]
    assert 0 < len(infos) < ORDERS * 0.4  # sampled
    assert abs(sum(weight(e) for e in infos) - ORDERS) <= 5  # each kept record stands for 1/rate of them
    assert all(weight(e) == 1.0 for e in by_severity["ERROR"])
    assert "DEBUG" not in by_severity or len(by_severity["DEBUG"]) < 10
