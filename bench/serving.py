"""What the benchmark's own servers (sink, floor) share: raw-bytes gRPC services, the ready line, the loop.

Each server is its own process. It binds 127.0.0.1:0, then writes one JSON line to stderr in the
proxy's format, `{"msg": "<name> ready", "ports": {...}}`, so the harness learns every target's
ports the same way; it runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import grpc
import orjson

HOST = "127.0.0.1"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
EXPORT_METHOD = f"/{LOGS_SERVICE}/Export"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

T = TypeVar("T")
RawMethod = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


def grpc_server(services: Mapping[str, Mapping[str, RawMethod]]) -> tuple[grpc.aio.Server, int]:
    """A server on 127.0.0.1:0 whose unary methods take and return bytes (no (de)serialisers)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                service,
                {name: grpc.unary_unary_rpc_method_handler(method) for name, method in methods.items()},
            )
            for service, methods in services.items()
        ]
    )
    port = server.add_insecure_port(f"{HOST}:0")
    return server, port


def announce_ready(name: str, ports: Mapping[str, int]) -> None:
    sys.stderr.write(orjson.dumps({"msg": f"{name} ready", "ports": dict(ports)}).decode() + "\n")
    sys.stderr.flush()


async def until_terminated() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def run(main: Coroutine[Any, Any, T]) -> T:
    """On uvloop when installed, as the proxy runs, so the floor compares like with like."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
