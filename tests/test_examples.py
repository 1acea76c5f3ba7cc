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

    output = (tmp_path / "app.log").read_text()
    for trouble in ("detected recursive logging", "Queue full", "Invalid type"):
        assert trouble not in output, output[-3000:]
    if service == "django-shop":  # Django's own record of each 502, its request object sent as text
        failures = [e for e in sink.sink.log_records() if e.scope.name == "django.request"]
        assert len(failures) == PAYMENTS // 10
        attributes = {a.key: a.value for a in failures[0].record.attributes}
        assert attributes["request"].string_value.startswith("<WSGIRequest: POST '/orders/")
        assert attributes["status_code"].int_value == 502

    records = shop_records(sink, service)
    by_severity: dict[str, list[LogEntry]] = {}
    for entry in records:
        by_severity.setdefault(entry.record.severity_text, []).append(entry)
    infos = by_severity["INFO"]
    assert 0 < len(infos) < ORDERS * 0.4  # sampled
    assert abs(sum(weight(e) for e in infos) - ORDERS) <= 5  # each kept record stands for 1/rate of them
    assert all(weight(e) == 1.0 for e in by_severity["ERROR"])
    assert "DEBUG" not in by_severity or len(by_severity["DEBUG"]) < 10


# ---- a burst while the proxy is not up yet: the SDK's batch queue must hold it ----

BURST = 20_000
BURST_APP = """
import logging, sys
sys.path.insert(0, sys.argv[1])
from otel_logging import send_logs_to_otlp

provider = send_logs_to_otlp("burst-app")
log = logging.getLogger("shop")
for i in range(int(sys.argv[2])):
    log.info("imported product %d", i)
print("emitted", flush=True)
sys.stdin.read()  # until the test says the proxy is up
provider.shutdown()  # flushes what the queue holds
"""


def run_burst_before_the_proxy_is_up(tmp_path: Path, environ: dict[str, str]) -> tuple[float, str]:
    """An app that logs BURST records at start, while its proxy is not listening yet (a sidecar that
    starts after the application); then the proxy comes up. Returns the records the proxy received and
    what the app printed."""
    (tmp_path / "burst_app.py").write_text(BURST_APP)
    with socket.socket() as reserved:  # the proxy's port, refusing connections until it starts
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        environment = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
        environment |= {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", **environ}
        process = subprocess.Popen(
            [sys.executable, str(tmp_path / "burst_app.py"), str(EXAMPLES), str(BURST)],
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None and process.stdin is not None
        try:
            output: list[str] = []
            while "emitted\n" not in output and len(output) < 1000:  # the SDK may log retries meanwhile
                output.append(process.stdout.readline())
                assert output[-1], f"the app exited: {output}"
        except BaseException:
            process.kill()
            raise
    config = {
        "receivers": {"grpc": {"endpoint": f"127.0.0.1:{port}"}},
        "exporters": [{"type": "debug", "stream": "stderr"}],
    }
    with ProxyThread(config) as proxy:
        process.stdin.close()
        output.append(process.stdout.read())
        process.wait(60)
        received = proxy.metric(
            "lipservice_log_records_received_total", {"service": "burst-app", "severity": "INFO"}
        )
    return received, "".join(output)


def test_a_burst_before_the_proxy_is_up_reaches_it_whole(tmp_path: Path) -> None:
    received, output = run_burst_before_the_proxy_is_up(tmp_path, {})
    assert "Queue full" not in output and "recursive logging" not in output, output[-2000:]
    assert received == BURST


def test_with_the_sdks_default_queue_the_same_burst_is_cut_before_the_proxy(tmp_path: Path) -> None:
    received, output = run_burst_before_the_proxy_is_up(tmp_path, {"OTEL_BLRP_MAX_QUEUE_SIZE": "2048"})
    assert "Queue full, dropping Log." in output  # on stderr, not swallowed by the handler
    assert received <= 2048 + 1024  # the queue, and at most the batch the exporter held while retrying
