"""A local stand-in for PostHog's OTLP logs endpoint, on 127.0.0.1, for exporter tests.

Like PostHog: `POST /i/v1/logs` with OTLP/HTTP protobuf (gzip or not), the project token as
`Authorization: Bearer <token>`, 401 for a wrong or missing token, and a body limit (2 MiB before
compression; a bigger body gets 413 and is counted in `oversized_bodies`). `rate_limit(n, retry_after)`
answers the next n requests with 429 and Retry-After. Runs in the test's event loop:

    async with PosthogServer(token="phc_test") as posthog:
        ... exporter with host=posthog.url ...
"""

from __future__ import annotations

import gzip
import threading

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from .sink import HOST, LogEntry

LOGS_PATH = "/i/v1/logs"
MAX_BODY_BYTES = 2 * 1024 * 1024


class PosthogServer:
    def __init__(self, token: str, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.body_sizes: list[int] = []  # decompressed sizes of accepted bodies
        self.oversized_bodies: list[int] = []
        self.content_encodings: list[str] = []  # of accepted bodies ("" for none)
        self.unauthorized = 0
        self.rate_limited = 0
        self._requests: list[ExportLogsServiceRequest] = []
        self._authorizations: list[str] = []
        self._rate_limit = (0, 0, 0)  # (requests to let pass first, requests to refuse, Retry-After)
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post(LOGS_PATH, self._logs)
        self._runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self._port, reuse_address=True)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> PosthogServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The `host` to configure (the exporter appends /i/v1/logs)."""
        return f"http://{HOST}:{self._port}"

    def rate_limit(self, times: int, retry_after: int, *, after: int = 0) -> None:
        """Answer 429 with Retry-After to `times` requests, once `after` more requests have passed."""
        with self._lock:
            self._rate_limit = (after, times, retry_after)

    def requests(self) -> list[ExportLogsServiceRequest]:
        with self._lock:
            return list(self._requests)

    def authorizations(self) -> list[str]:
        """The Authorization header of every request (to check what was sent, never to log)."""
        with self._lock:
            return list(self._authorizations)

    def log_records(self) -> list[LogEntry]:
        return [
            LogEntry(resource_logs.resource, scope_logs.scope, record)
            for request in self.requests()
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]

    async def _logs(self, request: web.Request) -> web.Response:
        wire_body = await request.read()
        authorization = request.headers.get("Authorization", "")
        with self._lock:
            self._authorizations.append(authorization)
            if authorization != f"Bearer {self.token}":
                self.unauthorized += 1
                return web.json_response({"error": "invalid project token"}, status=401)
            passing, refusing, retry_after = self._rate_limit
            if passing > 0:
                self._rate_limit = (passing - 1, refusing, retry_after)
            elif refusing > 0:
                self._rate_limit = (0, refusing - 1, retry_after)
                self.rate_limited += 1
                return web.json_response(
                    {"error": "rate limited"}, status=429, headers={"Retry-After": str(retry_after)}
                )
        if request.content_type != "application/x-protobuf":
            return web.json_response(
                {"error": f"unsupported content type {request.content_type}"}, status=415
            )
        try:
            body = (
                gzip.decompress(wire_body) if request.headers.get("Content-Encoding") == "gzip" else wire_body
            )
            message = ExportLogsServiceRequest.FromString(body)
        except (OSError, EOFError, DecodeError) as exc:
            return web.json_response({"error": f"bad body: {exc}"}, status=400)
        with self._lock:
            if len(body) > self.max_body_bytes:
                self.oversized_bodies.append(len(body))
                return web.json_response({"error": "body too large"}, status=413)
            self.body_sizes.append(len(body))
            self.content_encodings.append(request.headers.get("Content-Encoding", ""))
            self._requests.append(message)
        return web.Response(
            body=ExportLogsServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )
