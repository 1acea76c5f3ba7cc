"""The load generator: replays a pool of pre-built OTLP logs requests into a target and measures.

    python -m bench.loadgen --pool FILE --target 127.0.0.1:4317 [--protocol grpc|http] \\
        [--encoding protobuf|json] [--streams 16] [--connections 4] [--warmup 3] [--duration 10] \\
        [--rate RECORDS_PER_S] [--max-requests N] [--measure-pid PID]

N streams (asyncio tasks) share M connections (stream i uses connection i mod M); each does unary
Export calls of the pool's requests in turn. Over gRPC (HTTP/2) all N calls are in flight at once;
over HTTP/1.1 a connection carries one call at a time, so at most M are, and the time a stream waits
for its connection is not part of the call's latency. Closed loop by default (each stream sends its next
request when the last is answered: maximum throughput); with `--rate` the calls are paced to that
many records/s (open loop) and a call that could not start on time counts as late.

After `--warmup` seconds the measured window opens (stdout gets `{"event": "window-open", ...}`) and
lasts `--duration` seconds or until `--max-requests` calls have been made. A call counts when it is
answered inside the window. With `--measure-pid`, the CPU time of that process and its descendants is
sampled when the window opens and closes. The last stdout line is the JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import grpc
import numpy
import orjson

from .proctree import TreeSample, sample_tree
from .serving import EXPORT_METHOD, MAX_MESSAGE_BYTES, run
from .workloads import Encoding, Transport, read_pool

CONNECT_TIMEOUT = 10.0
LATE_AFTER = 0.002  # an open-loop call starting this much after its slot counts as late
MIB = 1024 * 1024
Announce = Callable[[dict[str, Any]], None]
CONTENT_TYPES: dict[Encoding, str] = {"protobuf": "application/x-protobuf", "json": "application/json"}


@dataclass(frozen=True)
class LoadPlan:
    target: str  # host:port
    protocol: Transport
    encoding: Encoding
    streams: int
    connections: int
    warmup: float
    duration: float
    max_requests: int
    rate: float | None = None  # records/s; None: closed loop
    call_timeout: float = 10.0
    measure_pid: int | None = None

    def __post_init__(self) -> None:
        if self.streams < 1 or self.connections < 1 or self.connections > self.streams:
            raise ValueError("need 1 <= connections <= streams")
        if self.warmup < 0 or self.duration <= 0 or self.max_requests < 1:
            raise ValueError("need warmup >= 0, duration > 0 and max_requests >= 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.protocol == "grpc" and self.encoding != "protobuf":
            raise ValueError("OTLP/gRPC carries protobuf only")


class CallFailed(Exception):
    """An Export call that was not a success; the argument names the outcome (a gRPC code, HTTP status)."""


class Caller(Protocol):
    async def open(self) -> None: ...
    def turn(self, connection: int) -> AbstractAsyncContextManager[Any]:
        """Held around a call: where a connection carries one call at a time, the wait for it."""
        ...

    async def call(self, connection: int, body: bytes) -> None: ...
    async def close(self) -> None: ...


class GrpcCaller:
    def __init__(self, plan: LoadPlan) -> None:
        self._plan = plan
        self._channels: list[grpc.aio.Channel] = []
        self._methods: list[grpc.aio.UnaryUnaryMultiCallable] = []

    async def open(self) -> None:
        # A channel-local subchannel pool gives every channel its own TCP connection (by default
        # channels with equal arguments share one).
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        self._channels = [
            grpc.aio.insecure_channel(self._plan.target, options=options)
            for _ in range(self._plan.connections)
        ]
        await asyncio.wait_for(
            asyncio.gather(*(channel.channel_ready() for channel in self._channels)), CONNECT_TIMEOUT
        )
        self._methods = [channel.unary_unary(EXPORT_METHOD) for channel in self._channels]

    def turn(self, connection: int) -> AbstractAsyncContextManager[Any]:
        return contextlib.nullcontext()  # HTTP/2 multiplexes: every stream's call goes out at once

    async def call(self, connection: int, body: bytes) -> None:
        try:
            await self._methods[connection](body, timeout=self._plan.call_timeout)
        except grpc.aio.AioRpcError as exc:
            raise CallFailed(exc.code().name) from None

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels))


class HttpCaller:
    """One aiohttp session per connection, each holding one TCP connection. HTTP/1.1 carries one call at
    a time per connection, so streams take turns on theirs through a lock, which is fair (FIFO):
    aiohttp's own pool wait is not (a stream that releases the connection and asks again at once gets
    it back, and the other streams starve until their timeout). The wait for the turn is not timed."""

    def __init__(self, plan: LoadPlan) -> None:
        self._plan = plan
        self._url = f"http://{plan.target}/v1/logs"
        self._headers = {"Content-Type": CONTENT_TYPES[plan.encoding]}
        self._sessions: list[aiohttp.ClientSession] = []
        self._turns: list[asyncio.Lock] = []

    async def open(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._plan.call_timeout, connect=CONNECT_TIMEOUT)
        self._sessions = [
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout)
            for _ in range(self._plan.connections)
        ]
        self._turns = [asyncio.Lock() for _ in range(self._plan.connections)]

    def turn(self, connection: int) -> asyncio.Lock:
        return self._turns[connection]

    async def call(self, connection: int, body: bytes) -> None:
        try:
            async with self._sessions[connection].post(self._url, data=body, headers=self._headers) as reply:
                await reply.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CallFailed(type(exc).__name__) from None
        if reply.status != 200:
            raise CallFailed(f"HTTP_{reply.status}")

    async def close(self) -> None:
        await asyncio.gather(*(session.close() for session in self._sessions))


@dataclass
class Window:
    """What happened while the measured window was open."""

    is_open: bool = False
    opened_at: float = 0.0
    closed_at: float = 0.0
    calls: int = 0
    records: int = 0
    late_calls: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Totals:
    """Everything acked over the whole run (warm-up included), to check delivery end to end."""

    calls: int = 0
    records: int = 0
    errors: int = 0


class LoadRun:
    def __init__(self, plan: LoadPlan, pool: list[tuple[int, bytes]], caller: Caller) -> None:
        self._plan = plan
        self._pool = pool
        self._caller = caller
        self._issued = 0
        self._stop = asyncio.Event()
        self._started = 0.0
        mean_records = sum(records for records, _ in pool) / len(pool)
        self._slot_seconds = mean_records / plan.rate if plan.rate else 0.0
        self.window = Window()
        self.totals = Totals()

    async def _stream(self, index: int) -> None:
        connection = index % self._plan.connections
        while not self._stop.is_set() and self._issued < self._plan.max_requests:
            slot = self._issued
            self._issued += 1
            records, body = self._pool[slot % len(self._pool)]
            if self._slot_seconds:
                delay = self._started + slot * self._slot_seconds - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -LATE_AFTER and self.window.is_open:
                    self.window.late_calls += 1
            async with self._caller.turn(connection):
                await self._call(connection, records, body)

    async def _call(self, connection: int, records: int, body: bytes) -> None:
        began = time.perf_counter()
        try:
            await self._caller.call(connection, body)
        except CallFailed as failure:
            self.totals.errors += 1
            if self.window.is_open:
                self.window.errors[str(failure)] += 1
            return
        latency = time.perf_counter() - began
        self.totals.calls += 1
        self.totals.records += records
        if self.window.is_open:
            self.window.calls += 1
            self.window.records += records
            self.window.latencies.append(latency)

    async def run(self, announce: Announce) -> tuple[TreeSample | None, TreeSample | None, float]:
        """Warm up, measure, stop; returns the target's tree samples and the client CPU in the window."""
        plan = self._plan
        self._started = time.perf_counter()
        streams = asyncio.gather(*(self._stream(index) for index in range(plan.streams)))
        try:
            done, _ = await asyncio.wait({streams}, timeout=plan.warmup)
            if done:
                streams.result()  # a stream's unexpected error surfaces here
                raise RuntimeError("the request cap was reached during the warm-up")
            before = sample_tree(plan.measure_pid) if plan.measure_pid else None
            client_before = time.process_time()
            self.window.opened_at = time.perf_counter()
            self.window.is_open = True
            announce({"event": "window-open", "pids": list(before.pids) if before else []})
            await asyncio.wait({streams}, timeout=plan.duration)
            self.window.is_open = False
            self.window.closed_at = time.perf_counter()
            client_cpu = time.process_time() - client_before
            after = sample_tree(plan.measure_pid) if plan.measure_pid else None
        finally:
            self._stop.set()
            await asyncio.wait_for(streams, plan.call_timeout + CONNECT_TIMEOUT)
        return before, after, client_cpu


def percentile_ms(latencies: list[float], q: float) -> float | None:
    return round(float(numpy.percentile(latencies, q)) * 1000, 3) if latencies else None


def report(
    plan: LoadPlan, run: LoadRun, before: TreeSample | None, after: TreeSample | None, client_cpu: float
) -> dict[str, Any]:
    window = run.window
    seconds = window.closed_at - window.opened_at
    figures: dict[str, Any] = {
        "protocol": plan.protocol,
        "encoding": plan.encoding,
        "streams": plan.streams,
        "connections": plan.connections,
        "offered_records_per_s": plan.rate,
        "warmup_s": plan.warmup,
        "window_s": round(seconds, 3),
        "calls": window.calls,
        "records": window.records,
        "records_per_s": round(window.records / seconds),
        "calls_per_s": round(window.calls / seconds, 1),
        "latency_ms": {
            "p50": percentile_ms(window.latencies, 50),
            "p99": percentile_ms(window.latencies, 99),
            "max": round(max(window.latencies) * 1000, 3) if window.latencies else None,
        },
        "late_calls": window.late_calls,
        "errors": dict(window.errors),
        "client_cpu_s": round(client_cpu, 3),
        "acked_calls_total": run.totals.calls,
        "acked_records_total": run.totals.records,
        "failed_calls_total": run.totals.errors,
    }
    if before is not None and after is not None:
        cpu = after.cpu_seconds - before.cpu_seconds
        figures |= {
            "target_pids": len(after.pids),
            "target_cpu_s": round(cpu, 3),
            "target_cpu_share": round(cpu / seconds, 3),  # 1.0 = one core busy all the window
            "records_per_cpu_s": round(window.records / cpu) if cpu > 0 else None,
            "target_rss_mib": round(after.rss_bytes / MIB, 1),
            "target_peak_rss_mib": round(after.peak_rss_bytes / MIB, 1),
        }
    return figures


async def generate(plan: LoadPlan, pool: list[tuple[int, bytes]], announce: Announce) -> dict[str, Any]:
    caller: Caller = GrpcCaller(plan) if plan.protocol == "grpc" else HttpCaller(plan)
    await caller.open()
    try:
        run = LoadRun(plan, pool, caller)
        before, after, client_cpu = await run.run(announce)
    finally:
        await caller.close()
    return report(plan, run, before, after, client_cpu)


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> tuple[LoadPlan, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, required=True, help="pool file written by bench.workloads")
    parser.add_argument("--target", required=True, help="host:port of the gRPC or HTTP receiver")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--encoding", choices=("protobuf", "json"), default="protobuf")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the measured window")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="cap on calls in the run")
    parser.add_argument("--rate", type=float, help="records/s, open loop (default: closed loop)")
    parser.add_argument("--call-timeout", type=float, default=10.0)
    parser.add_argument("--measure-pid", type=int, help="process whose tree's CPU is measured")
    args = parser.parse_args(argv)
    try:
        plan = LoadPlan(
            target=args.target,
            protocol=args.protocol,
            encoding=args.encoding,
            streams=args.streams,
            connections=args.connections,
            warmup=args.warmup,
            duration=args.duration,
            max_requests=args.max_requests,
            rate=args.rate,
            call_timeout=args.call_timeout,
            measure_pid=args.measure_pid,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return plan, args.pool


def main(argv: list[str] | None = None) -> None:
    plan, pool_path = parse_args(argv)
    pool = read_pool(pool_path)
    emit({"event": "report", **run(generate(plan, pool, emit))})


if __name__ == "__main__":
    main()
