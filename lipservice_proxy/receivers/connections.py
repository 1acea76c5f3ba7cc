"""Connection guards for the OTLP/HTTP receiver: a deadline for request headers and a cap on connections.

aiohttp has no timer between a request's first byte and the end of its headers (its only one before
then is the keep-alive timer), so a client that drips headers a byte a second holds a connection,
and a file descriptor, for as long as it likes. Each connection's protocol is wrapped here:

- from the connection's start, and from the first byte of each later request on a kept-alive
  connection, the request line and headers must arrive within `header_timeout`, else the connection
  is closed (as Go's `ReadHeaderTimeout`); the timer stops when the request reaches its handler;
- at most `max_connections` are open at once; one more is answered 503 with Retry-After and closed,
  so a flood of connections costs the receiver its own slots, not the process's file descriptors
  (the admin server listens on its own socket and stays reachable).

Every connection cut is counted in `lipservice_receiver_requests_total{outcome="header_timeout"|
"connection_limit"}` and logged (the log handler rate-limits repeated lines).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from ..telemetry import Telemetry

log = logging.getLogger(__name__)

OVER_LIMIT_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


class ConnectionGuard:
    """One receiver's open connections, their header deadlines and their cap."""

    def __init__(
        self, protocol: str, *, max_connections: int, header_timeout: float, telemetry: Telemetry
    ) -> None:
        self.protocol = protocol
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._telemetry = telemetry
        self._open = telemetry.receiver_connections.labels(protocol)
        self._by_transport: dict[asyncio.BaseTransport, GuardedConnection] = {}

    @property
    def open_connections(self) -> int:
        return len(self._by_transport)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server`: `factory`'s protocols, guarded."""
        return lambda: GuardedConnection(factory(), self)

    def request_started(self, transport: Any) -> None:
        """The request on `transport` reached its handler: its headers arrived in time."""
        connection = self._by_transport.get(transport)
        if connection is not None:
            connection.request_started()

    def request_finished(self, transport: Any) -> None:
        connection = self._by_transport.get(transport)
        if connection is not None:
            connection.request_finished()

    # ---- called by GuardedConnection ----

    def admit(self, transport: asyncio.BaseTransport, connection: GuardedConnection) -> bool:
        if len(self._by_transport) >= self.max_connections:
            self._cut("connection_limit")
            log.warning(
                "%s receiver: refused a connection from %s: %d connections are open (max_connections)",
                self.protocol.upper(),
                _peer(transport),
                len(self._by_transport),
            )
            return False
        self._by_transport[transport] = connection
        self._open.inc()
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        if self._by_transport.pop(transport, None) is not None:
            self._open.dec()

    def timed_out(self, transport: asyncio.BaseTransport) -> None:
        self._cut("header_timeout")
        log.warning(
            "%s receiver: closed a connection from %s: request headers not received within %gs "
            "(header_timeout)",
            self.protocol.upper(),
            _peer(transport),
            self.header_timeout,
        )

    def _cut(self, outcome: str) -> None:
        self._telemetry.receiver_requests.labels(self.protocol, outcome).inc()


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the header deadline and the cap around it."""

    __slots__ = ("_guard", "_in_request", "_inner", "_timer", "_transport")

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        if not self._guard.admit(transport, self):
            transport.write(OVER_LIMIT_RESPONSE)
            transport.close()
            return
        self._transport = transport
        self._inner.connection_made(transport)
        self._start_timer()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return  # refused: nothing is read
        if self._timer is None and not self._in_request:
            self._start_timer()  # the first byte of the next request on a kept-alive connection
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._stop_timer()
        self._guard.release(self._transport)
        self._transport = None
        self._inner.connection_lost(exc)

    def request_started(self) -> None:
        self._in_request = True
        self._stop_timer()

    def request_finished(self) -> None:
        self._in_request = False

    def _start_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.header_timeout, self._expire)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is None or self._in_request:
            return
        self._guard.timed_out(self._transport)
        self._transport.abort()  # nothing to flush; a slow reader must not hold the socket either


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unknown"
