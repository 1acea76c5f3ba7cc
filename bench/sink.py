"""The benchmark's upstream: an OTLP/gRPC LogsService that counts the records it receives and acks.

    python -m bench.sink      # prints {"msg": "sink ready", "ports": {"grpc": N}} on stderr

It shares the 2 cores with what is measured, so it does the least that still checks delivery: one
upb parse per request to count records, no storage. `read_counts(endpoint)` asks it (over a second
raw-bytes method, `/lipservice.bench.Sink/Counts`) what it has received so far.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import grpc
import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from .serving import LOGS_SERVICE, announce_ready, grpc_server, run, until_terminated

SINK_SERVICE = "lipservice.bench.Sink"
COUNTS_METHOD = f"/{SINK_SERVICE}/Counts"


@dataclass
class Tally:
    requests: int = 0
    records: int = 0
    bytes: int = 0
    malformed: int = 0


def count_records(body: bytes) -> int:
    request = ExportLogsServiceRequest.FromString(body)
    return sum(len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs)


async def serve() -> None:
    tally = Tally()

    async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            records = count_records(body)
        except DecodeError as exc:
            tally.malformed += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed protobuf: {exc}")
        tally.requests += 1
        tally.records += records
        tally.bytes += len(body)
        return b""  # an empty ExportLogsServiceResponse: full success

    async def counts(_body: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return orjson.dumps(asdict(tally))

    server, port = grpc_server({LOGS_SERVICE: {"Export": export}, SINK_SERVICE: {"Counts": counts}})
    await server.start()
    announce_ready("sink", {"grpc": port})
    await until_terminated()
    await server.stop(1.0)


def read_counts(endpoint: str, timeout: float = 5.0) -> Tally:
    with grpc.insecure_channel(endpoint) as channel:
        reply = channel.unary_unary(COUNTS_METHOD)(b"", timeout=timeout)
    return Tally(**orjson.loads(reply))


if __name__ == "__main__":
    run(serve())
