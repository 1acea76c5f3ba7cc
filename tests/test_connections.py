"""Hostile connections on the OTLP/HTTP receiver: headers dripped a byte a second are cut after
`header_timeout`, connections beyond `max_connections` are refused, and meanwhile `/healthz` and a
well-behaved client keep being answered. A real proxy process on loopback; every loop is bounded."""

from __future__ import annotations

import contextlib
import http.client
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from .support.proxy import ProxyProcess, http_get, loopback_config
from .support.waiting import wait_until

DRIPPERS = 300
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def export_body(index: int) -> bytes:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value = f"order {index} shipped"
    return request.SerializeToString()


def is_closed(sock: socket.socket) -> bool:
    """Whether the peer closed `sock` (EOF or reset); never blocks."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(4096) == b""  # readable: returns at once
    except ConnectionError:
        return True


@contextmanager
def dripping_connections(port: int, count: int, stop: threading.Event) -> Iterator[list[socket.socket]]:
    """`count` connections that send a request line, then one header byte per second per connection."""
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            sock.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            sockets.append(sock)

        def drip() -> None:
            for _ in range(60):  # bounded: a minute at most
                for sock in sockets:
                    with contextlib.suppress(OSError):  # closed by the proxy, as it should be
                        sock.send(b"a", socket.MSG_DONTWAIT)
                if stop.wait(1.0):  # the pace of the attack, not a synchronisation
                    return

        dripper = threading.Thread(target=drip, name="dripper", daemon=True)
        dripper.start()
        try:
            yield sockets
        finally:
            stop.set()
            dripper.join(10)


def test_dripped_headers_are_cut_while_healthz_and_a_normal_client_keep_working(tmp_path: Path) -> None:
    config = {
        "receivers": {"http": {"header_timeout": "2s"}},
        "exporters": [{"type": "debug", "stream": "stderr"}],
    }
    with ProxyProcess(config, tmp_path) as proxy:
        port = proxy.ports["http"]
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # one kept-alive connection
        stop = threading.Event()
        started = time.monotonic()
        with dripping_connections(port, DRIPPERS, stop) as sockets:
            exports = 0

            def all_cut_while_others_are_served() -> bool:
                nonlocal exports
                status, _ = http_get(proxy.admin_url + "/healthz")
                assert status == 200
                client.request("POST", "/v1/logs", body=export_body(exports), headers=PROTOBUF)
                response = client.getresponse()
                response.read()
                assert response.status == 200
                exports += 1
                return all(is_closed(sock) for sock in sockets)

            wait_until(all_cut_while_others_are_served, timeout=20, interval=0.2, what="every dripper cut")
            elapsed = time.monotonic() - started
        client.close()
        assert exports >= 5 and elapsed >= 2  # the normal client outlived the header timeout
        cut = proxy.metric(
            "lipservice_receiver_requests_total", {"protocol": "http", "outcome": "header_timeout"}
        )
        assert cut == DRIPPERS
        assert proxy.metric("lipservice_receiver_connections", {"protocol": "http"}) == 0
        assert proxy.terminate() == 0
    lines = [line["msg"] for line in proxy.log_lines if "header_timeout" in line.get("msg", "")]
    assert 1 <= len(lines) <= 11  # logged, at a bounded rate
    assert "request headers not received within 2s" in lines[0]


def test_connections_beyond_the_limit_are_refused_and_the_admin_server_still_answers(tmp_path: Path) -> None:
    config = {"receivers": {"http": {"max_connections": 20, "header_timeout": "60s"}}}
    with ProxyProcess(config, tmp_path) as proxy:
        port = proxy.ports["http"]
        with ExitStack() as stack:
            held = [
                stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
                for _ in range(20)
            ]
            wait_until(
                lambda: proxy.metric("lipservice_receiver_connections", {"protocol": "http"}) == 20,
                what="20 connections open",
            )
            extra = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            answer = b""
            for _ in range(100):  # bounded: the proxy answers and closes
                chunk = extra.recv(4096)
                if not chunk:
                    break
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
            status, _ = http_get(proxy.admin_url + "/healthz")
            assert status == 200
            assert not any(is_closed(sock) for sock in held)
        refused = proxy.metric(
            "lipservice_receiver_requests_total", {"protocol": "http", "outcome": "connection_limit"}
        )
        assert refused == 1
        # once the held connections are gone, a client is served again
        wait_until(
            lambda: proxy.metric("lipservice_receiver_connections", {"protocol": "http"}) == 0,
            what="the held connections released",
        )
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        client.request("POST", "/v1/logs", body=export_body(1), headers=PROTOBUF)
        assert client.getresponse().status == 200
        client.close()
        assert proxy.terminate() == 0


def grpc_export(endpoint: str, index: int) -> None:
    """One Export call from a fresh gRPC channel (a new connection): raises if refused."""
    with grpc.insecure_channel(endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        export(export_body(index), timeout=10)


def test_grpc_connections_that_never_finish_the_handshake_are_closed(tmp_path: Path) -> None:
    config = {"receivers": {"grpc": {"handshake_timeout": "1s"}}}
    with ProxyProcess(config, tmp_path) as proxy:
        port = proxy.ports["grpc"]
        with ExitStack() as stack:
            silent = [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(50)]
            for sock in silent:
                sock.sendall(b"PRI * HTTP/2.0\r\n")  # half a preface, then nothing
            exports = 0

            def all_closed_while_others_are_served() -> bool:
                nonlocal exports
                grpc_export(proxy.grpc_endpoint, exports)
                exports += 1
                return all(is_closed(sock) for sock in silent)

            wait_until(
                all_closed_while_others_are_served, timeout=20, interval=0.2, what="every socket closed"
            )
        assert proxy.terminate() == 0


def test_grpc_connections_beyond_the_limit_are_refused(tmp_path: Path) -> None:
    config = {"receivers": {"grpc": {"max_connections": 5, "handshake_timeout": "60s"}}}
    with ProxyProcess(config, tmp_path) as proxy:
        port = proxy.ports["grpc"]
        with ExitStack() as stack:
            held = [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(5)]
            with pytest.raises(grpc.RpcError) as refused:
                grpc_export(proxy.grpc_endpoint, 1)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            status, _ = http_get(proxy.admin_url + "/healthz")
            assert status == 200
            for sock in held:
                sock.close()
        wait_until(lambda: _exports_again(proxy.grpc_endpoint), timeout=20, what="a client served again")
        assert proxy.terminate() == 0


def _exports_again(endpoint: str) -> bool:
    try:
        grpc_export(endpoint, 2)
    except grpc.RpcError:
        return False
    return True


def open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


def test_the_open_file_limit_is_raised_to_fit_the_connection_caps(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 1000 + 1000 + 256  # both receivers' default max_connections, plus the reserve
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"this machine's hard open-file limit ({hard}) is below {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))  # inherited by the proxy
    proxy = ProxyProcess({}, tmp_path)
    try:
        proxy.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert proxy.process is not None
        assert open_file_limits(proxy.process.pid)[0] >= needed
        assert proxy.terminate() == 0
    finally:
        proxy.__exit__(None, None, None)


def test_a_hard_open_file_limit_below_the_caps_is_a_warning(tmp_path: Path) -> None:
    """The soft limit goes as far as the hard one allows, and the log says what to change."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(loopback_config({"receivers": {"http": {"max_connections": 2000}}}))
    )
    low_hard = min(1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    script = (  # the proxy under a lower hard limit than this machine's
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (256, {low_hard}))\n"
        "from lipservice_proxy.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    command = [sys.executable, "-c", script, "run", "-c", str(config_path)]
    with subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True) as child:
        assert child.stderr is not None
        warning = ""
        for _ in range(200):  # bounded: the start-up lines
            line = child.stderr.readline()
            if not line or "lipservice-proxy ready" in line:
                break
            if "open-file limit" in line:
                warning = line
        assert open_file_limits(child.pid)[0] == low_hard  # raised as far as allowed
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=30)
    assert f"the open-file limit ({low_hard}) is below the {1000 + 2000 + 256}" in warning
    assert "receivers.*.max_connections" in warning
