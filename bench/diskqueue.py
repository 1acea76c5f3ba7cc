"""What the delivery machinery costs: the disk queue's append and fsync, and queue-to-sink throughput.

    .venv/bin/python -m bench.diskqueue [--seconds 3] [--directory DIR]

1. append+fsync: one entry written and fdatasync'ed, per payload size (the cost a client would pay
   per request if every request were synced alone).
2. put until durable, fsync per batch: N concurrent putters against the disk backlog, so puts that
   arrive during one fsync share the next (group commit): requests/s and latency percentiles.
3. end to end: an ExportQueue (memory, then disk) fed 20 requests of 100 records at a time (awaited
   together, as concurrent receivers would), delivering to a real OTLP sink over gRPC: records/s.

Figures are noisy on a shared machine; each is from one run of `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from lipservice_proxy.config import QueueSettings, RetrySettings
from lipservice_proxy.exporters.persistent import DiskBacklog, frames
from lipservice_proxy.exporters.queue import ExportQueue
from lipservice_proxy.telemetry import Telemetry
from tests.support.delivery import grpc_exporter, logs_request
from tests.support.sink import OtlpSink


def append_and_fsync(directory: Path, seconds: float) -> None:
    for size in (1024, 64 * 1024, 1024 * 1024):
        entry = frames.encode(os.urandom(size), 10)
        path = directory / f"append-{size}.seg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            count, written_only = 0, 0.0
            deadline = time.perf_counter() + seconds / 3
            started = time.perf_counter()
            while time.perf_counter() < deadline:
                begin = time.perf_counter()
                os.write(fd, entry)
                written_only += time.perf_counter() - begin
                os.fdatasync(fd)
                count += 1
            elapsed = time.perf_counter() - started
        finally:
            os.close(fd)
            path.unlink()
        print(
            f"append+fdatasync {size // 1024:>5} KiB: {elapsed / count * 1e6:8.0f} us each "
            f"(write alone {written_only / count * 1e6:6.1f} us), {count / elapsed:7.0f}/s"
        )


async def concurrent_puts(directory: Path, seconds: float, putters: int) -> None:
    settings = QueueSettings(directory=directory / f"puts-{putters}", max_disk_mib=4096)
    backlog = DiskBacklog("bench", settings, Telemetry())
    await backlog.open()
    payload = logs_request(range(50)).SerializeToString()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def putter() -> None:
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            durable = backlog.append(payload, 50)
            assert durable is not None
            await durable
            latencies.append(time.perf_counter() - begin)

    started = time.perf_counter()
    await asyncio.gather(*(putter() for _ in range(putters)))
    elapsed = time.perf_counter() - started
    await backlog.close()
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"put until durable, {putters:>2} concurrent putters, {len(payload) // 1024} KiB requests: "
        f"{len(latencies) / elapsed:7.0f} requests/s, "
        f"p50 {cuts[49] * 1e3:.2f} ms, p99 {cuts[98] * 1e3:.2f} ms"
    )


async def queue_to_sink(directory: Path | None, seconds: float) -> None:
    telemetry = Telemetry()
    per_request = 100
    payload = logs_request(range(per_request)).SerializeToString()
    async with OtlpSink() as sink:
        settings = QueueSettings(directory=directory, max_disk_mib=4096, max_records=1_000_000)
        queue = ExportQueue(grpc_exporter(sink), settings, RetrySettings(), telemetry)
        await queue.start()
        put = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:  # 20 requests at a time, as concurrent clients would send
            durables = [queue.put(payload, per_request) for _ in range(20)]
            put += 20 * per_request
            await asyncio.gather(*(durable for durable in durables if durable is not None))
            await asyncio.sleep(0)  # let the senders run
        await queue.shutdown(time.monotonic() + 60)
        elapsed = time.perf_counter() - started
        kind = "disk" if directory is not None else "memory"
        print(
            f"{kind:>6} queue -> OTLP/gRPC sink: {put / elapsed:9.0f} records/s put, "
            f"{sink.log_record_count / elapsed:9.0f} records/s delivered "
            f"({len(sink.requests('logs'))} requests)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--directory", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.directory) as name:
        directory = Path(name)
        append_and_fsync(directory, args.seconds)
        for putters in (1, 8, 64):
            asyncio.run(concurrent_puts(directory, args.seconds, putters))
        asyncio.run(queue_to_sink(None, args.seconds))
        asyncio.run(queue_to_sink(directory / "e2e", args.seconds))


if __name__ == "__main__":
    main()
