"""Hostile clients against both receivers of a real proxy process: malformed and truncated protobuf,
wrong wire types, huge strings, deep nesting, 100k attributes, invalid UTF-8, compression bombs, lying
Content-Length, slow-drip bodies, wrong content types. Each gets its 4xx / gRPC status within a time
bound; afterwards the process is alive, serves normally, logged no internal error, and its memory
stayed bounded (peak and growth read from /proc).

Longer run of the random part: LIPSERVICE_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/test_fuzz_receivers.py
"""

from __future__ import annotations

import gzip
import http.client
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import cache
from pathlib import Path

import grpc
import orjson
import pytest
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import payloads
from lipservice_proxy.otlp.json_codec import message_to_json

from .support.proxy import ProxyProcess, http_get, sink_exporter
from .support.sink import SinkThread
from .support.waiting import wait_until

MIB = 1 << 20
READ_TIMEOUT = 1.0
QUICK = 5.0  # seconds a refusal may take on a loaded 2-core machine
SLOW = READ_TIMEOUT + QUICK
PEAK_RSS_LIMIT_MIB = 512
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
PROTOBUF, JSON = "application/x-protobuf", "application/json"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with SinkThread() as sink:
        config = {
            "receivers": {
                "http": {"max_request_body_mib": 4, "read_timeout": f"{READ_TIMEOUT}s"},
                "grpc": {"max_recv_msg_size_mib": 4},
            },
            "exporters": [sink_exporter(sink.sink.grpc_endpoint)],
        }
        with ProxyProcess(config, tmp_path_factory.mktemp("hostile")) as running:
            yield running


def memory_mib(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


# ---- HTTP ----


def post(
    port: int, body: bytes, content_type: str | None = PROTOBUF, **headers: str
) -> tuple[int, bytes, float]:
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        all_headers = {**({"Content-Type": content_type} if content_type else {}), **headers}
        connection.request("POST", "/v1/logs", body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        connection.close()


def raw_exchange(port: int, head: bytes, drip: bytes = b"", pause: float = 0.0) -> tuple[bytes, float]:
    """Send `head`, then `drip` one byte per `pause` seconds (until the server answers or closes);
    return the status line and the seconds it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        answered = threading.Event()

        def dripper() -> None:
            for byte in drip:
                if answered.wait(pause):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return

        thread = threading.Thread(target=dripper, daemon=True)
        thread.start()
        try:
            answer = sock.recv(4096)
        finally:
            answered.set()
            thread.join(10)
    return answer.split(b"\r\n", 1)[0], time.monotonic() - started


def head(content_length: int | None, content_type: str = PROTOBUF, chunked: bool = False) -> bytes:
    lines = [b"POST /v1/logs HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: " + content_type.encode()]
    if content_length is not None:
        lines.append(b"Content-Length: %d" % content_length)
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n"


@cache
def gzip_bomb() -> bytes:
    return payloads.compression_bomb(1 << 30)  # 1 GiB inflated, about 1 MiB on the wire


def valid_body() -> bytes:
    return payloads.ordinary_request().SerializeToString()


HTTP_CASES: dict[str, tuple[Callable[[], bytes], str | None, dict[str, str], int]] = {
    # name: (body, Content-Type, other headers, expected status)
    "garbage": (lambda: b"\xff\xfe\xfd" * 100, PROTOBUF, {}, 400),
    "truncated": (lambda: valid_body()[:-7], PROTOBUF, {}, 400),
    "length past the end": (lambda: b"\x0a\xff\xff\xff\x07" + b"x" * 10, PROTOBUF, {}, 400),
    "wrong wire type": (payloads.wrong_wire_type, PROTOBUF, {}, 200),  # an unknown field: ignored
    "newest AnyValue kind": (payloads.strindex_body, PROTOBUF, {}, 200),  # was a 500 (atheris finding)
    "nested past the limit": (lambda: payloads.nested_bytes(60), PROTOBUF, {}, 400),
    "nested within the limit": (lambda: payloads.nested_bytes(30), PROTOBUF, {}, 200),
    "json nested past the limit": (
        lambda: b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + b'{"arrayValue":{"values":[' * 70,
        JSON,
        {},
        400,
    ),
    "100k attributes": (lambda: payloads.many_attributes(100_000).SerializeToString(), PROTOBUF, {}, 200),
    "huge string": (lambda: payloads.huge_body(3 * MIB).SerializeToString(), PROTOBUF, {}, 200),
    "over the size limit": (lambda: payloads.huge_body(5 * MIB).SerializeToString(), PROTOBUF, {}, 413),
    "invalid utf-8": (payloads.invalid_utf8_protobuf, PROTOBUF, {}, 400),
    "invalid utf-8 json": (payloads.invalid_utf8_json, JSON, {}, 400),
    "json of the wrong shape": (lambda: b'{"resourceLogs": 5}', JSON, {}, 400),
    "gzip bomb": (gzip_bomb, PROTOBUF, {"Content-Encoding": "gzip"}, 413),
    "deflate bomb": (
        lambda: payloads.compression_bomb(64 * MIB, "deflate"),
        PROTOBUF,
        {"Content-Encoding": "deflate"},
        413,
    ),
    "gzip that is not": (lambda: b"\x1f\x8b" + b"\x00" * 40, PROTOBUF, {"Content-Encoding": "gzip"}, 400),
    "truncated gzip": (lambda: gzip.compress(valid_body())[:-9], PROTOBUF, {"Content-Encoding": "gzip"}, 400),
    "unknown encoding": (valid_body, PROTOBUF, {"Content-Encoding": "br"}, 415),
    "text/plain": (valid_body, "text/plain", {}, 415),
    "no content type": (valid_body, None, {}, 415),
    "grpc content type": (valid_body, "application/grpc", {}, 415),
    "protobuf sent as json": (valid_body, JSON, {}, 400),
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_http_refuses_each_hostile_body_with_the_right_status_in_time(proxy: ProxyProcess, case: str) -> None:
    body, content_type, headers, expected = HTTP_CASES[case]
    status, answer, seconds = post(proxy.ports["http"], body(), content_type, **headers)
    assert status == expected, answer[:300]
    assert seconds < QUICK, f"{case}: {seconds:.1f}s"
    if status != 200:
        decoded = orjson.loads(answer) if content_type == JSON else None
        message = decoded["message"] if decoded else status_pb2.Status.FromString(answer).message
        assert message  # a google.rpc.Status that says what was wrong


def test_content_length_over_the_limit_is_refused_before_the_body_is_read(proxy: ProxyProcess) -> None:
    status_line, seconds = raw_exchange(proxy.ports["http"], head(2 << 30))
    assert status_line.startswith(b"HTTP/1.1 413") and seconds < QUICK


def test_a_content_length_longer_than_the_body_times_out_with_408(proxy: ProxyProcess) -> None:
    status_line, seconds = raw_exchange(proxy.ports["http"], head(1000) + valid_body()[:100])
    assert status_line.startswith(b"HTTP/1.1 408") and READ_TIMEOUT <= seconds < SLOW


def test_a_content_length_shorter_than_the_body_reads_only_that_much(proxy: ProxyProcess) -> None:
    body = valid_body()
    status_line, seconds = raw_exchange(proxy.ports["http"], head(len(body) // 2) + body)
    # half a message is malformed, and the rest is no HTTP request: aiohttp refuses it, on HTTP/1.0
    assert b" 400 " in status_line and seconds < QUICK


def test_a_chunked_body_past_the_limit_is_refused(proxy: ProxyProcess) -> None:
    chunk = b"x" * MIB
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6))
    status_line, seconds = raw_exchange(proxy.ports["http"], head(None, chunked=True) + framed)
    assert status_line.startswith(b"HTTP/1.1 413") and seconds < QUICK


def test_slow_drip_bodies_time_out_while_other_clients_are_served(proxy: ProxyProcess) -> None:
    port = proxy.ports["http"]
    body = valid_body()
    results: list[tuple[bytes, float]] = []
    drips = [
        threading.Thread(target=lambda: results.append(raw_exchange(port, head(len(body)), body, pause=0.2)))
        for _ in range(20)
    ]
    for thread in drips:
        thread.start()
    started = time.monotonic()
    while time.monotonic() - started < READ_TIMEOUT / 2:  # bounded: half the drips' lifetime
        status, _, seconds = post(port, body)
        assert status == 200 and seconds < QUICK
    for thread in drips:
        thread.join(SLOW + 10)
    assert len(results) == 20
    for status_line, seconds in results:
        assert status_line.startswith(b"HTTP/1.1 408") and seconds < SLOW + 2


EXAMPLES = int(os.environ.get("LIPSERVICE_FUZZ_EXAMPLES", "150"))


@settings(max_examples=EXAMPLES, deadline=timedelta(seconds=QUICK), suppress_health_check=list(HealthCheck))
@given(
    body=st.binary(max_size=2048)
    | st.sampled_from([valid_body(), message_to_json(payloads.ordinary_request())]),
    content_type=st.sampled_from(
        [PROTOBUF, JSON, "application/protobuf", "text/plain", "", "application/json; x"]
    ),
    encoding=st.sampled_from(["", "gzip", "deflate", "identity", "zstd"]),
    compress=st.booleans(),
)
def test_random_requests_get_an_answer_from_the_documented_set(
    proxy: ProxyProcess, body: bytes, content_type: str, encoding: str, compress: bool
) -> None:
    if compress and encoding in ("gzip", "deflate"):
        body = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    headers = {"Content-Encoding": encoding} if encoding else {}
    status, _, _ = post(proxy.ports["http"], body, content_type or None, **headers)
    assert status in (200, 400, 413, 415)


# ---- gRPC ----


def grpc_call(
    proxy: ProxyProcess, body: bytes, compression: grpc.Compression | None = None
) -> grpc.StatusCode:
    options = [("grpc.max_send_message_length", 64 * MIB)]
    with grpc.insecure_channel(proxy.grpc_endpoint, options=options) as channel:
        call = channel.unary_unary(LOGS_METHOD, request_serializer=None, response_deserializer=None)
        try:
            call(body, timeout=QUICK, compression=compression)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


INVALID, EXHAUSTED, OK = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OK,
)
GRPC_CASES: dict[str, tuple[Callable[[], bytes], grpc.Compression | None, grpc.StatusCode]] = {
    "garbage": (lambda: b"\xff\xfe\xfd" * 100, None, INVALID),
    "truncated": (lambda: valid_body()[:-7], None, INVALID),
    "wrong wire type": (payloads.wrong_wire_type, None, OK),
    "nested past the limit": (lambda: payloads.nested_bytes(60), None, INVALID),
    "invalid utf-8": (payloads.invalid_utf8_protobuf, None, INVALID),
    "100k attributes": (lambda: payloads.many_attributes(100_000).SerializeToString(), None, OK),
    "over the size limit": (lambda: payloads.huge_body(5 * MIB).SerializeToString(), None, EXHAUSTED),
    # 48 MiB: under the client's own 64 MiB send limit (which a 64 MiB body exceeds, so the client
    # refused it before the proxy saw anything), far over the proxy's 4 MiB once decompressed
    "gzip bomb": (lambda: payloads.huge_body(48 * MIB).SerializeToString(), grpc.Compression.Gzip, EXHAUSTED),
}


GRPC_OUTCOMES = {INVALID: ("invalid",), EXHAUSTED: ("too_large",), OK: ("success", "partial")}


def grpc_outcomes(proxy: ProxyProcess) -> dict[str, float]:
    outcomes = ("success", "partial", "invalid", "too_large", "refused", "unauthenticated", "error")
    return {
        outcome: proxy.metric("lipservice_receiver_requests_total", {"protocol": "grpc", "outcome": outcome})
        for outcome in outcomes
    }


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_grpc_refuses_each_hostile_message_with_the_right_status_in_time(
    proxy: ProxyProcess, case: str
) -> None:
    body, compression, expected = GRPC_CASES[case]
    data = body()
    before = grpc_outcomes(proxy)
    started = time.monotonic()
    assert grpc_call(proxy, data, compression) == expected
    assert time.monotonic() - started < QUICK
    # every call is counted once, under its outcome, refusals gRPC made itself included
    after = wait_until(lambda: (counts := grpc_outcomes(proxy)) != before and counts, what="the call counted")
    changed = {
        outcome: after[outcome] - before[outcome] for outcome in after if after[outcome] != before[outcome]
    }
    assert len(changed) == 1 and next(iter(changed.values())) == 1
    assert next(iter(changed)) in GRPC_OUTCOMES[expected]


# ---- afterwards ----


def test_memory_stays_bounded_under_repeated_hostile_traffic(proxy: ProxyProcess) -> None:
    assert proxy.process is not None
    pid, port = proxy.process.pid, proxy.ports["http"]
    bodies = {name: (case[0](), case[1], case[2]) for name, case in HTTP_CASES.items()}
    grpc_bodies = {name: (case[0](), case[1]) for name, case in GRPC_CASES.items()}
    after_round: list[float] = []
    for _ in range(3):
        for body, content_type, headers in bodies.values():
            post(port, body, content_type, **headers)
        for body, compression in grpc_bodies.values():
            grpc_call(proxy, body, compression)
        after_round.append(memory_mib(pid)["VmRSS"])
    peak = memory_mib(pid)["VmHWM"]
    print(f"\nproxy RSS after each hostile round: {[round(m) for m in after_round]} MiB, peak {peak:.0f} MiB")
    assert peak < PEAK_RSS_LIMIT_MIB
    assert after_round[-1] - after_round[0] < 64, "memory keeps growing with repeated hostile requests"


def test_the_process_survived_and_serves_normally(proxy: ProxyProcess) -> None:
    assert proxy.process is not None and proxy.process.poll() is None
    assert post(proxy.ports["http"], valid_body())[0] == 200
    assert grpc_call(proxy, valid_body()) == grpc.StatusCode.OK
    status, metrics = http_get(proxy.admin_url + "/metrics")
    assert status == 200
    outcomes = [
        line for line in metrics.splitlines() if line.startswith(b"lipservice_receiver_requests_total{")
    ]
    assert outcomes and not [line for line in outcomes if b'outcome="error"' in line]  # no internal error
    wait_until(lambda: proxy.log_lines, what="some log lines")
    unexpected = [line for line in proxy.log_lines if line.get("level") in ("error", "critical")]
    assert not unexpected, unexpected[:3]
