"""The benchmark's upstream: an OTLP/gRPC LogsService that counts the records it receives and acks.

    python -m bench.sink      # prints {"msg": "sink ready", "ports": {"grpc": N}} on stderr

It shares the 2 cores with what is measured, so it does the least that still checks delivery: it
parses each request with an envelope-only schema (`ENVELOPE`: the three nesting levels, each log
record left as bytes), which counts records for a sixth of the CPU of a full parse; no storage. A full
parse made the sink a burst of several milliseconds of CPU per 8,192-record batch from the proxy, on
the same two cores as the proxy and the load generator. `read_counts(endpoint)` asks it (over a second
raw-bytes method, `/lipservice.bench.Sink/Counts`) what it has received so far.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import grpc
import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from .serving import LOGS_SERVICE, announce_ready, grpc_server, run, until_terminated

SINK_SERVICE = "lipservice.bench.Sink"
COUNTS_METHOD = f"/{SINK_SERVICE}/Counts"


@dataclass
class Tally:
    requests: int = 0
    records: int = 0
    bytes: int = 0
    malformed: int = 0


def envelope_type() -> type[Message]:
    """ExportLogsServiceRequest's wire layout down to the log records, which stay bytes."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="lipservice_bench_envelope.proto", package="lipservice.bench", syntax="proto3"
    )
    field = descriptor_pb2.FieldDescriptorProto
    for name, number, child in (
        ("Scope", 2, None),  # ScopeLogs.log_records
        ("Resource", 2, "Scope"),  # ResourceLogs.scope_logs
        ("Request", 1, "Resource"),  # ExportLogsServiceRequest.resource_logs
    ):
        message = proto.message_type.add(name=name)
        entry = message.field.add(name="entries", number=number, label=field.LABEL_REPEATED)
        if child is None:
            entry.type = field.TYPE_BYTES
        else:
            entry.type, entry.type_name = field.TYPE_MESSAGE, f".lipservice.bench.{child}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("lipservice.bench.Request"))


ENVELOPE = envelope_type()


def count_records(body: bytes) -> int:
    request = ENVELOPE.FromString(body)
    return sum(len(scope.entries) for resource in request.entries for scope in resource.entries)


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
