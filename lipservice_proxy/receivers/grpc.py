"""OTLP/gRPC receiver (grpc.aio): LogsService, plus Trace/Metrics services when passthrough is set.

Handlers are registered with no deserializer, so each request arrives as bytes and is parsed once,
by the shared handler. gRPC itself enforces `max_recv_msg_size` (RESOURCE_EXHAUSTED without
RetryInfo, i.e. not retryable, as OTLP wants for oversize data) and decompresses gzip. LogsService's
Export is registered as client-streaming, though clients call it unary, so that its handler runs
before the message is read: a message gRPC refuses itself (over the limit before or after
decompression) then reads as EOF there and is counted, instead of never reaching Python at all.
Status codes come from the status table (`otlp/status.py`): bad data INVALID_ARGUMENT, a request no
queue can ever hold RESOURCE_EXHAUSTED, full queues UNAVAILABLE with a RetryInfo delay, missing or
wrong token UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from ..config import MIB, GrpcReceiverConfig, ServerTLS
from ..errors import Backpressure, PassthroughError, PayloadTooLarge, RequestError, Unauthenticated
from ..listen import check_grpc_endpoint, grpc_bind_failed
from ..otlp.retry_info import retry_info_trailer
from ..otlp.status import ANSWERS, UNEXPECTED, answer_for, retry_after
from .handler import ReceiverContext, count_accepted
from .tls import grpc_server_credentials

log = logging.getLogger(__name__)

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
SIGNAL_SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
}


async def _call_done(context: grpc.aio.ServicerContext[bytes, bytes], bound: float = 10.0) -> None:
    """Wait (at most `bound` seconds) until grpc has closed the call."""
    done = asyncio.get_running_loop().create_future()

    def release(_: object) -> None:
        if not done.done():
            done.set_result(None)

    context.add_done_callback(release)  # type: ignore[arg-type]  # grpc-stubs: a nominal class no function matches
    if not context.done():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, bound)


class GrpcReceiver:
    def __init__(
        self,
        config: GrpcReceiverConfig,
        context: ReceiverContext,
        *,
        tls: ServerTLS | None = None,
    ) -> None:
        self._config = config
        self._logs = context.logs
        self._telemetry = context.telemetry
        self._passthrough = context.passthrough
        self._auth = context.auth
        self._reuse_port = context.reuse_port
        self._credentials = grpc_server_credentials(tls) if tls is not None else None
        max_bytes = int(config.max_recv_msg_size_mib * MIB)
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", 64 * MIB),
                ("grpc.so_reuseport", 1 if context.reuse_port else 0),
                ("grpc.server_handshake_timeout_ms", int(config.handshake_timeout * 1000)),
                ("grpc.max_allowed_incoming_connections", config.max_connections),
            ],
        )
        self.port = 0

    async def start(self) -> int:
        handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
            "Export": grpc.stream_unary_rpc_method_handler(
                self._export_logs, request_deserializer=None, response_serializer=None
            )
        }
        generic = [grpc.method_handlers_generic_handler(LOGS_SERVICE, handlers)]
        if self._passthrough is not None:
            for signal, service in SIGNAL_SERVICES.items():
                if self._passthrough.enabled(signal):
                    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
                        self._forwarder(signal), request_deserializer=None, response_serializer=None
                    )
                    generic.append(grpc.method_handlers_generic_handler(service, {"Export": handler}))
        self._server.add_generic_rpc_handlers(generic)
        endpoint = self._config.endpoint
        check_grpc_endpoint("receivers.grpc.endpoint", endpoint, reuse_port=self._reuse_port)
        try:
            if self._credentials is not None:
                self.port = self._server.add_secure_port(endpoint, self._credentials)
            else:
                self.port = self._server.add_insecure_port(endpoint)
        except RuntimeError:  # grpc's "Failed to bind", without the reason
            raise grpc_bind_failed("receivers.grpc.endpoint", endpoint) from None
        await self._server.start()
        log.info("OTLP/gRPC receiver listening on %s", endpoint.rsplit(":", 1)[0] + f":{self.port}")
        return self.port

    async def shutdown(self, grace: float) -> None:
        """Refuse new calls at once; let calls in progress finish within `grace` seconds."""
        await self._server.stop(grace)

    def _count(self, outcome: str) -> None:
        self._telemetry.receiver_requests.labels("grpc", outcome).inc()

    async def _authenticate(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        if self._auth is None:
            return
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and self._auth.accepts(value):
                return
        refused = Unauthenticated("missing or invalid bearer token")
        answer = answer_for(refused)
        self._count(answer.outcome)
        await context.abort(answer.grpc_code, str(refused))

    async def _export_logs(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        await self._authenticate(context)
        request = await context.read()
        # gRPC refused the message and has answered RESOURCE_EXHAUSTED
        if request is grpc.aio.EOF:  # type: ignore[comparison-overlap]  # grpc-stubs leave EOF out of read()
            self._count(ANSWERS[PayloadTooLarge].outcome)
            await _call_done(context)  # answering before grpc has closed the call logs an error
            return b""
        # Abort after the except block, not inside it: abort raises, and an exception raised while
        # another is handled chains it, so grpc.aio's last aborted call would hold the refused request
        # (through the traceback) until the next one replaces it.
        answer, message = UNEXPECTED, "internal error"
        delay: float | None = None
        try:
            response = await self._logs.handle(request, "protobuf")
        except (RequestError, Backpressure) as exc:
            answer, message, delay = answer_for(exc), str(exc), retry_after(exc)
        except Exception:
            log.exception("logs export failed unexpectedly")
        else:
            count_accepted(self._telemetry, "grpc", response)
            return response.SerializeToString()
        self._count(answer.outcome)
        trailer = retry_info_trailer(answer.grpc_code, message, delay) if delay is not None else ()
        await context.abort(answer.grpc_code, message, trailing_metadata=trailer)

    def _forwarder(
        self, signal: str
    ) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
        passthrough = self._passthrough
        assert passthrough is not None

        async def forward(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            await self._authenticate(context)
            try:
                return await passthrough.forward(signal, request)
            except PassthroughError as exc:  # the upstream's status and trailers, relayed as they came
                await context.abort(answer_for(exc).grpc_code, exc.message, trailing_metadata=exc.trailers)

        return forward
