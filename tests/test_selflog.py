"""The proxy's own logs: one JSON object per line on stderr, rate-limited per message template, and
no log record body in them at info level, whatever the clients send and however upstream fails."""

from __future__ import annotations

import io
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest

from lipservice_proxy.logsetup import JsonFormatter, RateLimitFilter

from .support.proxy import ProxyProcess, sink_exporter
from .support.sdk import emit, sdk_logger
from .support.sink import SinkThread
from .support.waiting import wait_until

MARKER = "SECRET-BODY-7f3a9c12"


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, ManualClock]]:
    stream, clock = io.StringIO(), ManualClock()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RateLimitFilter(burst=3, interval=10.0, max_keys=50, clock=clock))
    logger = logging.getLogger("tests.selflog")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream, clock
    logger.handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_one_json_object_with_the_fields_a_log_pipeline_needs(
    captured: tuple[logging.Logger, io.StringIO, ManualClock],
) -> None:
    logger, stream, _ = captured
    logger.info("exporter %s: retrying %d records", "otlp", 17, extra={"exporter": "otlp"})
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logger.exception("failed:\n%s", "with a newline")
    first, second = lines(stream)
    assert first["level"] == "info" and first["logger"] == "tests.selflog"
    assert first["msg"] == "exporter otlp: retrying 17 records" and first["exporter"] == "otlp"
    assert str(first["ts"]).endswith("Z") and "T" in str(first["ts"])
    assert second["level"] == "error" and second["msg"] == "failed:\nwith a newline"
    assert "Traceback" in str(second["exception"]) and "ValueError: multi\nline" in str(second["exception"])
    assert len(stream.getvalue().splitlines()) == 2  # newlines inside stay escaped


def test_a_repeating_template_is_let_through_a_few_times_then_summarised(
    captured: tuple[logging.Logger, io.StringIO, ManualClock],
) -> None:
    logger, stream, clock = captured
    for attempt in range(100):
        logger.warning("exporter %s: retrying batch %d", "otlp", attempt)
    logger.warning("a different template")
    assert [line["msg"] for line in lines(stream)] == [
        "exporter otlp: retrying batch 0",
        "exporter otlp: retrying batch 1",
        "exporter otlp: retrying batch 2",
        "a different template",
    ]
    clock.now += 10.0
    logger.warning("exporter %s: retrying batch %d", "otlp", 100)
    last = lines(stream)[-1]
    assert last["msg"] == "exporter otlp: retrying batch 100" and last["suppressed"] == 97


def test_the_limiter_remembers_a_bounded_number_of_templates(
    captured: tuple[logging.Logger, io.StringIO, ManualClock],
) -> None:
    logger, stream, _ = captured
    rate_limit = logger.handlers[0].filters[0]
    assert isinstance(rate_limit, RateLimitFilter)
    for index in range(10_000):
        logger.info(f"distinct message {index}")  # an unbounded set of templates
    assert len(rate_limit._windows) <= 50
    assert len(lines(stream)) == 10_000  # each distinct template still passes


# ---- the real process ----


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkThread]:
    with SinkThread() as running:
        yield running


def post_json(url: str, body: bytes) -> int:
    request = urllib.request.Request(
        url + "/v1/logs", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_record_bodies_never_reach_the_logs_at_info_level(sink: SinkThread, tmp_path: Path) -> None:
    sink.sink.reset()
    sink.sink.fail_grpc(grpc.StatusCode.UNAVAILABLE, times=2)  # retried: warnings
    config = {"logging": {"level": "info"}, "exporters": [sink_exporter(sink.sink.grpc_endpoint)]}
    with ProxyProcess(config, tmp_path) as proxy:
        bodies = [
            {"body": f"{MARKER} user {i} paid", "severity": ("INFO", "ERROR")[i % 2]} for i in range(200)
        ]
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, bodies)
        # malformed requests whose bad parts are the bodies, and records with invalid ids
        assert post_json(proxy.http_url, f'{{"resourceLogs": "{MARKER}"}}'.encode()) == 400
        record = f'{{"body": {{"stringValue": "{MARKER}"}}, "traceId": "abcd"}}'
        assert post_json(
            proxy.http_url, f'{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{record}]}}]}}]}}'.encode()
        ) in (200, 400)
        wait_until(lambda: sink.sink.log_record_count >= 100, timeout=30, what="the ERROR records delivered")
        sink.sink.fail_grpc(
            grpc.StatusCode.INVALID_ARGUMENT
        )  # permanent: the next batches are dropped, logged
        with sdk_logger(proxy.grpc_endpoint) as logger:
            emit(logger, [{"body": f"{MARKER} refund {i}", "severity": "ERROR"} for i in range(20)])
        wait_until(
            lambda: any("dropping" in str(line.get("msg")) for line in proxy.log_lines),
            timeout=30,
            what="the permanent failure logged",
        )
        assert proxy.terminate() == 0
    sink.sink.clear_faults()
    assert proxy.log_lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in proxy.log_lines)
    leaked = [line for line in proxy.log_lines if MARKER in orjson.dumps(line).decode()]
    assert not leaked, leaked[:3]
