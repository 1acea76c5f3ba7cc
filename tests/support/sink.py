"""A real OTLP receiver for tests and benchmarks: gRPC and HTTP on 127.0.0.1, records what it accepts,
and fails on demand.

Design: `OtlpSink` is an asyncio object. Async tests run it in their own loop::

    async with OtlpSink() as sink:               # or: await sink.start() ... await sink.stop()
        ... export to sink.grpc_endpoint / sink.http_url ...
        records = await sink.wait_for_records(10)

Sync tests run the same object on a background thread with its own loop::

    with SinkThread() as running:
        ... export to running.sink.grpc_endpoint ...
        records = running.wait_for_records(10)   # blocking twins of the lifecycle and wait methods

Everything that is not lifecycle (reading what arrived, switching faults on and off) is a plain
method guarded by a lock, callable from any thread at any time. Faults apply to the next `times`
requests of their protocol, or until `clear_faults()`. `stop()` then `start()` reuses the same ports,
which is how a test takes the upstream down and brings it back.

gRPC serves Logs, Trace and Metrics `Export` with raw-bytes handlers; HTTP serves `/v1/logs`,
`/v1/traces` and `/v1/metrics` in protobuf or JSON, gzip or not, and answers in the request's
Content-Type.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import grpc
from aiohttp import web
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from lipservice_proxy.errors import BadRequest
from lipservice_proxy.otlp.json_codec import json_to_message, message_to_json

from .waiting import async_wait_until, wait_until

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
HOST = "127.0.0.1"


class Signal(NamedTuple):
    service: str
    request_type: type[Message]
    response_type: type[Message]
    rejected_field: str


SIGNALS = {
    "logs": Signal(
        "opentelemetry.proto.collector.logs.v1.LogsService",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        "rejected_log_records",
    ),
    "traces": Signal(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "rejected_spans",
    ),
    "metrics": Signal(
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "rejected_data_points",
    ),
}


@dataclass(frozen=True)
class ReceivedRequest:
    """One accepted export request."""

    signal: str  # logs, traces or metrics
    protocol: str  # grpc or http
    wire_body: bytes  # as it came over HTTP (possibly gzip); for gRPC, after gRPC's own decompression
    body: bytes  # the decoded body: protobuf, or the JSON text when content_type is JSON
    message: Message
    # HTTP headers, or gRPC metadata (which never shows grpc-encoding: grpc-core consumes it, so use
    # tests/support/tcp_relay.py to see gRPC compression on the wire); keys lowercased
    headers: dict[str, str]
    content_type: str  # application/x-protobuf, application/json, or application/grpc


class LogEntry(NamedTuple):
    """One received log record with its resource and scope."""

    resource: Resource
    scope: InstrumentationScope
    record: LogRecord


@dataclass
class _Fault:
    status: Any  # a grpc.StatusCode or an HTTP status
    remaining: int | None  # None: until cleared
    retry_after: float | str | None
    message: str


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[ReceivedRequest] = field(default_factory=list)
    log_record_count: int = 0
    attempts: dict[str, int] = field(default_factory=lambda: {"grpc": 0, "http": 0})
    faults: dict[str, _Fault] = field(default_factory=dict)
    delay: float = 0.0
    partial: tuple[int, str] | None = None


def status_details(code: int, message: str, retry_after: float | None) -> status_pb2.Status:
    """A google.rpc.Status, with RetryInfo when `retry_after` is given."""
    status = status_pb2.Status(code=code, message=message)
    if retry_after is not None:
        detail = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
    return status


class OtlpSink:
    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: (certificate, key) files to serve TLS on both ports instead of plaintext."""
        self._tls = tls
        self._state = _State()
        self._grpc_port = 0
        self._http_port = 0
        self._grpc_server: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None

    # ---- lifecycle (in the loop that runs the sink) ----

    async def start(self) -> None:
        """Listen on 127.0.0.1; the first start picks free ports, later starts reuse them."""
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", 256 * 2**20), ("grpc.so_reuseport", 0)]
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    signal.service, {"Export": grpc.unary_unary_rpc_method_handler(self._grpc_export(name))}
                )
                for name, signal in SIGNALS.items()
            ]
        )
        address = f"{HOST}:{self._grpc_port}"
        if self._tls is None:
            self._grpc_port = server.add_insecure_port(address)
        else:
            certificate, key = (path.read_bytes() for path in self._tls)
            self._grpc_port = server.add_secure_port(
                address, grpc.ssl_server_credentials([(key, certificate)])
            )
        await server.start()
        self._grpc_server = server

        app = web.Application(client_max_size=256 * 2**20)
        for name in SIGNALS:
            app.router.add_post(f"/v1/{name}", self._http_export(name))
        runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await runner.setup()
        context = None
        if self._tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self._tls)
        site = web.TCPSite(runner, HOST, self._http_port, reuse_address=True, ssl_context=context)
        await site.start()
        self._http_port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and drop open connections (ports are kept for the next start)."""
        if self._grpc_server is not None:
            await self._grpc_server.stop(None)
            self._grpc_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OtlpSink:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def grpc_endpoint(self) -> str:
        return f"{HOST}:{self._grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{'http' if self._tls is None else 'https'}://{HOST}:{self._http_port}"

    # ---- results (any thread) ----

    def requests(self, signal: str | None = None) -> list[ReceivedRequest]:
        with self._state.lock:
            return [r for r in self._state.requests if signal is None or r.signal == signal]

    def attempts(self, protocol: str | None = None) -> int:
        """Requests that reached the sink, including those answered with an injected fault."""
        with self._state.lock:
            return sum(n for p, n in self._state.attempts.items() if protocol is None or p == protocol)

    @property
    def log_record_count(self) -> int:
        with self._state.lock:
            return self._state.log_record_count

    def log_records(self) -> list[LogEntry]:
        """Every accepted log record with its resource and scope, in arrival order."""
        return [
            LogEntry(resource_logs.resource, scope_logs.scope, record)
            for request in self.requests("logs")
            for resource_logs in request.message.resource_logs  # type: ignore[attr-defined]
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]

    async def wait_for_records(self, count: int, timeout: float = 10.0) -> list[LogEntry]:  # noqa: ASYNC109
        await async_wait_until(
            lambda: self.log_record_count >= count, timeout, what=f"{count} log records at the sink"
        )
        return self.log_records()

    # ---- faults (any thread) ----

    def fail_grpc(
        self,
        code: grpc.StatusCode,
        *,
        times: int | None = None,
        retry_after: float | None = None,
        message: str = "injected failure",
    ) -> None:
        """Answer gRPC requests with `code` (with RetryInfo when `retry_after` is given)."""
        with self._state.lock:
            self._state.faults["grpc"] = _Fault(code, times, retry_after, message)

    def fail_http(
        self,
        status: int,
        *,
        times: int | None = None,
        retry_after: float | str | None = None,
        message: str = "injected failure",
    ) -> None:
        """Answer HTTP requests with `status`, a google.rpc.Status body and Retry-After when given
        (a number of seconds, or a string sent verbatim such as an HTTP-date)."""
        with self._state.lock:
            self._state.faults["http"] = _Fault(status, times, retry_after, message)

    def reset(self) -> None:
        """Forget what arrived and clear every fault: a fresh sink on the same ports."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.log_record_count = 0
            self._state.attempts = {"grpc": 0, "http": 0}
        self.clear_faults()

    def clear_faults(self) -> None:
        """Back to plain success: no fault, no delay, no partial success."""
        with self._state.lock:
            self._state.faults.clear()
            self._state.delay = 0.0
            self._state.partial = None

    def set_delay(self, seconds: float) -> None:
        """Hold every request this long before answering (a slow upstream)."""
        with self._state.lock:
            self._state.delay = seconds

    def set_partial_success(self, rejected: int, message: str) -> None:
        """Accept requests but report `rejected` items as rejected."""
        with self._state.lock:
            self._state.partial = (rejected, message)

    # ---- request handling ----

    def _admit(self, protocol: str) -> tuple[float, _Fault | None]:
        """Count the attempt and take the fault that applies to it, if any."""
        with self._state.lock:
            self._state.attempts[protocol] += 1
            fault = self._state.faults.get(protocol)
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._state.faults[protocol]
            return self._state.delay, fault

    def _accept(self, request: ReceivedRequest) -> Message:
        with self._state.lock:
            self._state.requests.append(request)
            if request.signal == "logs":
                self._state.log_record_count += sum(
                    len(scope_logs.log_records)
                    for resource_logs in request.message.resource_logs  # type: ignore[attr-defined]
                    for scope_logs in resource_logs.scope_logs
                )
            partial = self._state.partial
        signal = SIGNALS[request.signal]
        response = signal.response_type()
        if partial is not None:
            setattr(response.partial_success, signal.rejected_field, partial[0])  # type: ignore[attr-defined]
            response.partial_success.error_message = partial[1]  # type: ignore[attr-defined]
        return response

    def _grpc_export(self, name: str) -> Any:
        signal = SIGNALS[name]

        async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
            delay, fault = self._admit("grpc")
            if delay:
                await asyncio.sleep(delay)
            if fault is not None:
                details = status_details(fault.status.value[0], fault.message, fault.retry_after)  # type: ignore[arg-type]
                await context.abort(
                    fault.status,
                    fault.message,
                    trailing_metadata=(("grpc-status-details-bin", details.SerializeToString()),),
                )
            try:
                message = signal.request_type.FromString(body)
            except DecodeError as exc:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"not a {signal.request_type.__name__}: {exc}"
                )
            headers = {key.lower(): str(value) for key, value in context.invocation_metadata() or ()}
            response = self._accept(
                ReceivedRequest(name, "grpc", body, body, message, headers, "application/grpc")
            )
            return response.SerializeToString()

        return export

    def _http_export(self, name: str) -> Any:
        signal = SIGNALS[name]

        async def export(request: web.Request) -> web.Response:
            delay, fault = self._admit("http")
            wire_body = await request.read()
            content_type = request.content_type
            reply_type = JSON if content_type == JSON else PROTOBUF
            if delay:
                await asyncio.sleep(delay)
            if fault is not None:
                headers = (
                    {} if fault.retry_after is None else {"Retry-After": _retry_after_text(fault.retry_after)}
                )
                return _status_response(fault.status, fault.message, reply_type, headers)
            if content_type not in (PROTOBUF, JSON):
                return _status_response(415, f"unsupported content type {content_type!r}", PROTOBUF)
            encoding = request.headers.get("Content-Encoding", "").lower()
            try:
                body = _decompress(wire_body, encoding)
                if content_type == JSON:
                    message = json_to_message(body, signal.request_type)
                else:
                    message = signal.request_type.FromString(body)
            except (BadRequest, DecodeError, OSError, EOFError, zlib.error) as exc:
                return _status_response(400, f"bad {signal.request_type.__name__}: {exc}", reply_type)
            headers = {key.lower(): value for key, value in request.headers.items()}
            response = self._accept(
                ReceivedRequest(name, "http", wire_body, body, message, headers, content_type)
            )
            return _message_response(response, reply_type)

        return export


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    raise BadRequest(f"unsupported Content-Encoding {encoding!r}")


def _retry_after_text(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _message_response(
    message: Message, content_type: str, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    body = message_to_json(message) if content_type == JSON else message.SerializeToString()
    return web.Response(status=status, body=body, content_type=content_type, headers=headers)


def _status_response(
    status: int, message: str, content_type: str, headers: dict[str, str] | None = None
) -> web.Response:
    code = code_pb2.UNAVAILABLE if status in (429, 502, 503, 504) else code_pb2.INVALID_ARGUMENT
    return _message_response(status_pb2.Status(code=code, message=message), content_type, status, headers)


class SinkThread:
    """An OtlpSink on a background thread with its own event loop, for sync tests and benchmarks."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.sink = OtlpSink(tls)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="otlp-sink", daemon=True)

    def _run(self, coroutine: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> None:
        self._run(self.sink.start())

    def stop(self) -> None:
        self._run(self.sink.stop())

    def wait_for_records(self, count: int, timeout: float = 10.0) -> list[LogEntry]:
        wait_until(
            lambda: self.sink.log_record_count >= count, timeout, what=f"{count} log records at the sink"
        )
        return self.sink.log_records()

    def __enter__(self) -> SinkThread:
        self._thread.start()
        try:
            self.start()
        except BaseException:
            self._close_loop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)
        if not self._thread.is_alive():
            self._loop.close()
