"""A loopback TCP relay that counts the bytes it forwards: it shows what really went over the wire
(e.g. that a gRPC client compressed its messages, which the server side cannot see)."""

from __future__ import annotations

import asyncio
import contextlib

HOST = "127.0.0.1"
CHUNK = 64 * 1024


class TcpRelay:
    """Listens on 127.0.0.1:`port` and forwards every connection to `target_port` on 127.0.0.1."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.bytes_up = 0  # client -> target
        self.bytes_down = 0  # target -> client
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "relay not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._relay, HOST, 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_writer)
        try:
            target_reader, target_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_writer.close()
            self._writers.discard(client_writer)
            self._tasks.discard(task)
            return
        self._writers.add(target_writer)
        try:
            await asyncio.gather(
                self._pump(client_reader, target_writer, up=True),
                self._pump(target_reader, client_writer, up=False),
            )
        finally:
            for writer in (client_writer, target_writer):
                writer.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()
                self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                if up:
                    self.bytes_up += len(chunk)
                else:
                    self.bytes_down += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()
