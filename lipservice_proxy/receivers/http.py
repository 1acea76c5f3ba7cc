"""OTLP/HTTP receiver (aiohttp): /v1/logs, and /v1/traces + /v1/metrics when passthrough is set.

Protobuf and JSON share the port; the response uses the request's Content-Type. Bodies are read
with a byte limit and a deadline (chunked bodies without Content-Length included), gzip is
inflated with the same limit applied to the output (a gzip bomb gets 413, not our memory), and
every error carries a google.rpc.Status body. Full queues answer 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf.message import Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ..config import MIB, HttpReceiverConfig, ServerTLS, host_port
from ..errors import (
    Backpressure,
    BadRequest,
    NotAccepted,
    PassthroughError,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    Unauthenticated,
    UnsupportedMedia,
)
from ..listen import listen_error
from ..otlp.json_codec import json_to_message
from ..otlp.status import UNEXPECTED, Answer, answer_for, retry_after
from .connections import ConnectionGuard
from .handler import (
    CONTENT_TYPES,
    RESPONSE_CONTENT_TYPE,
    Encoding,
    ReceiverContext,
    count_accepted,
    decode_protobuf,
    encode,
    status_body,
)
from .tls import server_ssl_context

log = logging.getLogger(__name__)

MAX_GZIP_MEMBERS = 64
MIN_GRACE = 0.001  # seconds; a request in progress at shutdown gets at least this long
SIGNAL_TYPES: dict[str, tuple[type[Message], type[Message]]] = {
    "traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}


def inflate(body: bytes, content_encoding: str, limit: int) -> bytes:
    """Decode the Content-Encoding with the output bounded by `limit` bytes."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMedia(f"unsupported Content-Encoding {content_encoding!r} (use gzip or none)")
    wbits = 47 if encoding == "deflate" else 31  # 47: zlib or gzip header, auto-detected
    output: list[bytes] = []
    produced = 0
    data = body
    for _ in range(MAX_GZIP_MEMBERS):  # concatenated gzip members are one stream
        inflater = zlib.decompressobj(wbits=wbits)
        try:
            chunk = inflater.decompress(data, limit - produced + 1)
        except zlib.error as exc:
            raise BadRequest(f"invalid {encoding} body: {exc}") from None
        produced += len(chunk)
        if produced > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
        if not inflater.eof:
            raise BadRequest(f"truncated {encoding} body")
        output.append(chunk)
        data = inflater.unused_data
        if not data:
            return b"".join(output)
    raise BadRequest(f"more than {MAX_GZIP_MEMBERS} gzip members")


def request_encoding(content_type: str) -> Encoding:
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        return CONTENT_TYPES[media]
    except KeyError:
        raise UnsupportedMedia(
            f"unsupported Content-Type {media or '(none)'!r}: use application/x-protobuf or application/json"
        ) from None


class HttpReceiver:
    def __init__(
        self,
        config: HttpReceiverConfig,
        context: ReceiverContext,
        *,
        tls: ServerTLS | None = None,
    ) -> None:
        self._config = config
        self._logs = context.logs
        self._telemetry = context.telemetry
        self._passthrough = context.passthrough
        self._auth = context.auth
        self._ssl_context = server_ssl_context(tls) if tls is not None else None
        self._reuse_port = context.reuse_port
        self._limit = int(config.max_request_body_mib * MIB)
        self._guard = ConnectionGuard(
            "http",
            max_connections=config.max_connections,
            header_timeout=config.header_timeout,
            telemetry=context.telemetry,
        )
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        app = web.Application(client_max_size=self._limit, middlewares=[self._headers_arrived])
        app.router.add_post("/v1/logs", self._logs_route)
        for signal in SIGNAL_TYPES:
            app.router.add_post(f"/v1/{signal}", self._signal_route(signal))
        # auto_decompress off: `inflate` decodes with the size limit applied to its output
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            auto_decompress=False,
            keepalive_timeout=self._config.idle_timeout,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        host, port = host_port(self._config.endpoint)
        # Our own listener rather than a web.TCPSite, so that each connection's protocol is guarded.
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self._guard.wrap(self._runner.server),
                host,
                port,
                ssl=self._ssl_context,
                ssl_handshake_timeout=self._config.header_timeout if self._ssl_context else None,
                reuse_port=self._reuse_port or None,
                backlog=1024,
            )
        except OSError as exc:
            raise listen_error("receivers.http.endpoint", self._config.endpoint, exc) from None
        self.port = self._listener.sockets[0].getsockname()[1]
        log.info("OTLP/HTTP receiver listening on %s:%d", host, self.port)
        return self.port

    async def shutdown(self, grace: float) -> None:
        """Refuse new connections at once; let requests in progress finish within `grace` seconds, then
        cancel them (their clients see the connection close, unanswered: nothing was acknowledged)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            if (server := self._runner.server) is not None:
                server.pre_shutdown()  # idle keep-alive connections close now
                # the runner's own shutdown would wait its fixed timeout (60 s); aiohttp reads 0 as none
                await server.shutdown(max(grace, MIN_GRACE))
            await self._runner.cleanup()  # no connection is left: this runs the app's cleanup
            self._runner = None

    # ---- shared request handling ----

    @web.middleware
    async def _headers_arrived(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Between here and the response the connection is in a request: no header deadline."""
        self._guard.request_started(request.transport)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            self._guard.request_finished(request.transport)

    def _count(self, outcome: str) -> None:
        self._telemetry.receiver_requests.labels("http", outcome).inc()

    async def _read_body(self, request: web.Request) -> bytes:
        """The raw body, at most `limit` bytes, within `read_timeout`; chunked or with Content-Length."""
        if request.content_length is not None and request.content_length > self._limit:
            raise PayloadTooLarge(
                f"body of {request.content_length} bytes exceeds the limit of {self._limit} bytes"
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._config.read_timeout):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > self._limit:
                        raise PayloadTooLarge(f"body exceeds the limit of {self._limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeout(f"body not received within {self._config.read_timeout:g}s") from None
        return b"".join(chunks)

    async def _decoded_body(self, request: web.Request) -> tuple[bytes, Encoding]:
        encoding = request_encoding(request.headers.get("Content-Type", ""))
        body = await self._read_body(request)
        return inflate(body, request.headers.get("Content-Encoding", ""), self._limit), encoding

    def _authenticated(self, request: web.Request) -> bool:
        return self._auth is None or self._auth.accepts(request.headers.get("Authorization"))

    @staticmethod
    def _reply_encoding(request: web.Request) -> Encoding:
        media = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        return CONTENT_TYPES.get(media, "protobuf")

    def _error(self, request: web.Request, answer: Answer, message: str, delay: float | None) -> web.Response:
        """The answer's status with a google.rpc.Status body, in the request's encoding."""
        encoding = self._reply_encoding(request)
        headers = {"Retry-After": str(max(1, math.ceil(delay)))} if delay is not None else None
        return web.Response(
            status=answer.http_status,
            body=status_body(answer.grpc_code.value[0], message, encoding),
            content_type=RESPONSE_CONTENT_TYPE[encoding],
            headers=headers,
        )

    def _failure(self, request: web.Request, exc: RequestError | Backpressure) -> web.Response:
        """A refused request, counted by its outcome and answered by the status table."""
        answer = answer_for(exc)
        self._count(answer.outcome)
        return self._error(request, answer, str(exc), retry_after(exc))

    # ---- routes ----

    async def _logs_route(self, request: web.Request) -> web.Response:
        if not self._authenticated(request):
            return self._failure(request, Unauthenticated("missing or invalid bearer token"))
        try:
            body, encoding = await self._decoded_body(request)
            response = await self._logs.handle(body, encoding)
        except (RequestError, Backpressure) as exc:
            return self._failure(request, exc)
        except Exception:
            self._count(UNEXPECTED.outcome)
            log.exception("logs export failed unexpectedly")
            return self._error(request, UNEXPECTED, "internal error", None)
        count_accepted(self._telemetry, "http", response)
        return web.Response(body=encode(response, encoding), content_type=RESPONSE_CONTENT_TYPE[encoding])

    def _signal_route(self, signal: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        request_type, response_type = SIGNAL_TYPES[signal]

        async def route(request: web.Request) -> web.Response:
            if self._passthrough is None or not self._passthrough.enabled(signal):
                refused = NotAccepted(f"{signal} are not accepted here: passthrough.{signal} is not set")
                return self._failure(request, refused)
            if not self._authenticated(request):
                return self._failure(request, Unauthenticated("missing or invalid bearer token"))
            try:
                body, encoding = await self._decoded_body(request)
                if encoding == "json":
                    body = json_to_message(body, request_type).SerializeToString()
                else:
                    decode_protobuf(body, request_type)  # validate, so bad data gets 400 here, not upstream
                answer = await self._passthrough.forward(signal, body)
            except RequestError as exc:
                return self._failure(request, exc)
            except PassthroughError as exc:  # the upstream's status, relayed; counted by the passthrough
                return self._error(request, answer_for(exc), f"upstream: {exc.message}", retry_after(exc))
            if encoding == "json":
                answer = encode(response_type.FromString(answer), "json")
            return web.Response(body=answer, content_type=RESPONSE_CONTENT_TYPE[encoding])

        return route
