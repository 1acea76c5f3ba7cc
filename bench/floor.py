"""The fixed floor the proxy is compared with: the least an OTLP relay in Python can do.

    python -m bench.floor --upstream 127.0.0.1:PORT
    # prints {"msg": "floor ready", "ports": {"grpc": N, "http": M}} on stderr

Each request is parsed with protobuf (upb), re-serialised and forwarded to the upstream over one
grpc.aio channel; the client is answered when the upstream has acked. No sampling, no batching, no
metrics. gRPC is a raw-bytes grpc.aio server like the proxy's receiver; HTTP (for the `json`
workload) is aiohttp with the proxy's own OTLP/JSON decoder, the fastest one to hand (protobuf's
json_format is ~30x slower and would flatter the proxy).
"""

from __future__ import annotations

import argparse

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from lipservice_proxy.errors import BadRequest
from lipservice_proxy.otlp.json_codec import json_to_message

from .serving import (
    EXPORT_METHOD,
    HOST,
    LOGS_SERVICE,
    MAX_MESSAGE_BYTES,
    announce_ready,
    grpc_server,
    run,
    until_terminated,
)

UPSTREAM_TIMEOUT = 10.0
JSON = "application/json"


class UpstreamError(Exception):
    pass


class Relay:
    """Parse, re-serialise, forward: the gRPC and HTTP export handlers over one upstream channel."""

    def __init__(self, upstream: str) -> None:
        self._channel = grpc.aio.insecure_channel(
            upstream, options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        )
        self._export = self._channel.unary_unary(EXPORT_METHOD)

    async def forward(self, request: ExportLogsServiceRequest) -> None:
        try:
            await self._export(request.SerializeToString(), timeout=UPSTREAM_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise UpstreamError(f"upstream: {exc.code().name}: {exc.details()}") from None

    async def export_grpc(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            request = ExportLogsServiceRequest.FromString(body)
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed protobuf: {exc}")
        try:
            await self.forward(request)
        except UpstreamError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return b""  # an empty ExportLogsServiceResponse: full success

    async def export_http(self, http_request: web.Request) -> web.Response:
        body = await http_request.read()
        is_json = http_request.content_type == JSON
        try:
            request = (
                json_to_message(body, ExportLogsServiceRequest)
                if is_json
                else ExportLogsServiceRequest.FromString(body)
            )
        except (BadRequest, DecodeError) as exc:
            return web.Response(status=400, text=str(exc))
        try:
            await self.forward(request)
        except UpstreamError as exc:
            return web.Response(status=503, text=str(exc), headers={"Retry-After": "1"})
        return web.Response(body=b"{}" if is_json else b"", content_type=http_request.content_type)

    async def close(self) -> None:
        await self._channel.close()


async def serve(upstream: str) -> None:
    relay = Relay(upstream)
    server, grpc_port = grpc_server({LOGS_SERVICE: {"Export": relay.export_grpc}})
    await server.start()
    app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
    app.router.add_post("/v1/logs", relay.export_http)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    http_port = runner.addresses[0][1]
    announce_ready("floor", {"grpc": grpc_port, "http": http_port})
    await until_terminated()
    await server.stop(1.0)
    await runner.cleanup()
    await relay.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="host:port of the OTLP/gRPC upstream (the sink)")
    run(serve(parser.parse_args().upstream))


if __name__ == "__main__":
    main()
