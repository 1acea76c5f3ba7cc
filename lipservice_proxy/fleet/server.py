"""The analyzer's PolicyService (grpc.aio): samplers report pattern counts and watch the policy.

Handlers take raw bytes and parse them here, so a request that is not the message it claims to be
gets INVALID_ARGUMENT with the reason (as does one that breaks a bound, see wire.py), never INTERNAL.
Messages are capped at `fleet.max_message_mib` both ways. Keepalive pings from the samplers are
welcome every 10 s, and the server pings idle streams itself, so a sampler that vanished without
closing its connection does not hold a stream forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from ..auth import BearerAuthenticator
from ..errors import BadRequest, Unauthenticated
from ..listen import check_grpc_endpoint, grpc_bind_failed
from ..otlp.status import ANSWERS, answer_for
from ..telemetry import Telemetry
from . import policy_pb2 as pb
from .book import FleetBook
from .feed import PolicyFeed
from .wire import MAX_SAMPLER_ID, report_outcome

log = logging.getLogger(__name__)

SERVICE = "lipservice.v1.PolicyService"
REPORT_METHOD = f"/{SERVICE}/ReportPatterns"
WATCH_METHOD = f"/{SERVICE}/WatchPolicy"
UNAUTHENTICATED = ANSWERS[Unauthenticated]


M = TypeVar("M", bound=Message)


def _parse(message_type: type[M], data: bytes) -> M:
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise BadRequest(f"not a {message_type.DESCRIPTOR.full_name}: {exc}") from None


class PolicyServer:
    def __init__(
        self,
        endpoint: str,
        *,
        feed: PolicyFeed,
        book: FleetBook,
        telemetry: Telemetry,
        auth: BearerAuthenticator | None,
        max_message_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoint = endpoint
        self._feed = feed
        self._book = book
        self._telemetry = telemetry
        self._auth = auth
        self._clock = clock
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ]
        )
        self.port = 0

    async def start(self) -> int:
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "ReportPatterns": grpc.unary_unary_rpc_method_handler(self._report),
            "WatchPolicy": grpc.unary_stream_rpc_method_handler(self._watch),
        }
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        check_grpc_endpoint("fleet.listen", self._endpoint, reuse_port=True)  # grpc's default on Linux
        try:
            self.port = self._server.add_insecure_port(self._endpoint)
        except RuntimeError:  # grpc's "Failed to bind", without the reason
            raise grpc_bind_failed("fleet.listen", self._endpoint) from None
        await self._server.start()
        log.info("fleet PolicyService listening on %s", self._endpoint.rsplit(":", 1)[0] + f":{self.port}")
        return self.port

    async def shutdown(self, grace: float) -> None:
        self._feed.close()  # ends every policy stream now; samplers reconnect to the next analyzer
        await self._server.stop(grace)

    def _authorized(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> bool:
        if self._auth is None:
            return True
        metadata = context.invocation_metadata() or ()
        return any(key == "authorization" and self._auth.accepts(value) for key, value in metadata)

    async def _report(self, data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        # context.abort raises: nothing after it runs
        if not self._authorized(context):
            self._telemetry.fleet_reports_received.labels("unauthenticated").inc()
            await context.abort(UNAUTHENTICATED.grpc_code, "missing or invalid bearer token")
        try:
            request = _parse(pb.ReportPatternsRequest, data)
            report = report_outcome(request)
        except BadRequest as exc:
            self._telemetry.fleet_reports_received.labels("invalid").inc()
            log.warning("pattern report from %s refused: %s", context.peer(), exc)
            await context.abort(answer_for(exc).grpc_code, str(exc))
        self._book.report(report, context.peer(), self._clock())
        self._telemetry.fleet_reports_received.labels("accepted").inc()
        return pb.ReportPatternsResponse(accepted_patterns=len(request.patterns)).SerializeToString()

    async def _watch(
        self, data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        if not self._authorized(context):
            await context.abort(UNAUTHENTICATED.grpc_code, "missing or invalid bearer token")
        try:
            request = _parse(pb.WatchPolicyRequest, data)
        except BadRequest as exc:
            await context.abort(answer_for(exc).grpc_code, str(exc))
        peer = context.peer()
        sampler_id = request.sampler_id[:MAX_SAMPLER_ID] or peer
        self._book.stream_opened(sampler_id, peer)
        log.info("sampler %s (%s) watches the policy", sampler_id, peer)
        try:
            async for snapshot in self._feed.updates():
                yield snapshot.SerializeToString()
        finally:
            self._book.stream_closed(sampler_id)
            log.info("sampler %s stopped watching the policy", sampler_id)
