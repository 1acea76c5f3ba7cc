"""Benchmark workloads: pre-built pools of serialised OTLP logs requests, and the file they travel in.

A pool is generated once per run (its cost is not measured) and replayed in a cycle by the load
generator. Every record looks like one an OpenTelemetry SDK sends from a Kubernetes pod: resource
attributes (service, host, k8s), a scope, a few record attributes, a severity from the loghub Level
column (INFO where absent) and trace/span ids on ~30% of records.

- `loghub`: the shared loghub lines, each request from one system in file order, with every number
  and hex id replaced by a fresh value per record: bodies are mostly unique, their shapes repeat.
- `repetitive`: 98% of bodies repeat one of 8 lines per system exactly; 2% are fresh loghub lines.
- `small-batches`: `loghub` in requests of 16 records.
- `json`: `loghub` as OTLP/JSON over HTTP.
- `patterns`: N synthetic templates (default 10,000) with fresh numbers, for the memory soak.
"""

from __future__ import annotations

import itertools
import random
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from lipservice_proxy.otlp.json_codec import message_to_json
from tests.support.loghub import available_systems, iter_lines

Transport = Literal["grpc", "http"]
Encoding = Literal["protobuf", "json"]

BASE_TIME_NS = 1_732_000_000_000_000_000
TRACED_SHARE = 0.3
PODS_PER_SERVICE = 3
REPEATED_LINES_PER_SYSTEM = 8
REPEATED_SHARE = 0.98
SYNTHETIC_SERVICES = 10

# loghub levels as they appear in the files (Apache's "notice", BGL's "SEVERE", ...) -> OTLP severity
SEVERITY_NUMBERS = {
    "TRACE": 1,
    "DEBUG": 5,
    "INFO": 9,
    "NOTICE": 10,
    "WARN": 13,
    "WARNING": 13,
    "ERROR": 17,
    "SEVERE": 17,
    "FATAL": 21,
}
SEVERITY_TEXTS = {1: "TRACE", 5: "DEBUG", 9: "INFO", 10: "INFO", 13: "WARN", 17: "ERROR", 21: "FATAL"}

# A hex id (at least 8 hex characters mixing digits and letters) or a run of digits.
_VARIABLE = re.compile(
    r"(?<![0-9A-Za-z])(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}(?![0-9A-Za-z])|\d+"
)
_DIGIT_SHAPE = bytes.maketrans(b"0123456789", b"0000000000")


Source = Literal["loghub", "repetitive", "patterns"]


@dataclass(frozen=True)
class Workload:
    name: str
    source: Source  # where the bodies come from
    protocol: Transport
    encoding: Encoding
    batch: int
    description: str


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("loghub", "loghub", "grpc", "protobuf", 512, "loghub lines with fresh numbers and ids"),
        Workload(
            "repetitive", "repetitive", "grpc", "protobuf", 512, "98% exact repeats of 8 lines a system"
        ),
        Workload("small-batches", "loghub", "grpc", "protobuf", 16, "loghub in requests of 16 records"),
        Workload("json", "loghub", "http", "json", 512, "loghub as OTLP/JSON over HTTP"),
        Workload("patterns", "patterns", "grpc", "protobuf", 512, "N synthetic templates (memory soak)"),
    )
}


@dataclass(frozen=True)
class Line:
    body: str
    severity: int


@dataclass(frozen=True)
class PoolInfo:
    requests: int
    records: int
    bytes: int
    unique_bodies: float  # share of records whose body occurs once in the pool
    repeated_bodies: float  # share of records whose body is an exact repeat of an earlier one
    distinct_shapes: int  # bodies with every digit read as 0: what the engine's cache keys on

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "records": self.records,
            "bytes": self.bytes,
            "unique_bodies": round(self.unique_bodies, 4),
            "repeated_bodies": round(self.repeated_bodies, 4),
            "distinct_shapes": self.distinct_shapes,
        }


def fresh_value(token: str, rng: random.Random) -> str:
    """A new value of the same kind: digits up to the same magnitude, or hex of the same length."""
    if token.isdigit():
        return str(rng.randrange(10 ** len(token)))
    return rng.randbytes(len(token) // 2 + 1).hex()[: len(token)]


def refresh(text: str, rng: random.Random) -> str:
    return _VARIABLE.sub(lambda match: fresh_value(match.group(), rng), text)


def severity_of(level: str | None) -> int:
    return SEVERITY_NUMBERS.get((level or "INFO").upper(), SEVERITY_NUMBERS["INFO"])


# ---- body sources: each yields (service name, lines) for one request ----

BatchSource = Iterator[tuple[str, list[Line]]]


def loghub_lines() -> dict[str, list[Line]]:
    systems = available_systems()
    if not systems:
        raise FileNotFoundError("no loghub files next to the repository (../shared/loghub)")
    return {
        system: [Line(line.content, severity_of(line.level)) for line in iter_lines(system)]
        for system in systems
    }


def loghub_batches(batch: int, rng: random.Random) -> BatchSource:
    corpus = loghub_lines()
    cursors = dict.fromkeys(corpus, 0)
    while True:
        for system, lines in corpus.items():
            start = cursors[system]
            picked = [lines[(start + i) % len(lines)] for i in range(batch)]
            cursors[system] = (start + batch) % len(lines)
            yield system.lower(), [Line(refresh(line.body, rng), line.severity) for line in picked]


def repetitive_batches(batch: int, rng: random.Random) -> BatchSource:
    corpus = loghub_lines()
    repeated = {
        system: list({line.body: line for line in lines}.values())[:REPEATED_LINES_PER_SYSTEM]
        for system, lines in corpus.items()
    }
    while True:
        for system, lines in corpus.items():
            picked = [
                rng.choice(repeated[system])
                if rng.random() < REPEATED_SHARE
                else Line(refresh(line.body, rng), line.severity)
                for line in rng.choices(lines, k=batch)
            ]
            yield system.lower(), picked


def synthetic_template(number: int, vocabulary: list[str]) -> str:
    """A sentence of 6-11 words of its own: different numbers share few words at any position, so
    the template miner keeps them apart."""
    rng = random.Random(number)
    words = rng.sample(vocabulary, rng.randint(6, 11))
    return " ".join(words) + " took {} ms for request {}"


def pattern_batches(batch: int, rng: random.Random, patterns: int) -> BatchSource:
    """Each of 10 services logs its own tenth of the templates, so there are `patterns` (service,
    template) pairs in all, as many as the sampler keeps state for."""
    vocabulary = [
        "".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=4 + i % 7)) for i in range(5000)
    ]
    templates = [synthetic_template(number, vocabulary) for number in range(patterns)]
    services = [f"service-{number}" for number in range(min(SYNTHETIC_SERVICES, patterns))]
    owned = [templates[number :: len(services)] for number in range(len(services))]
    severities = [9] * 16 + [13, 13, 5, 17]
    for index in itertools.count():
        number = index % len(services)
        lines = [
            Line(template.format(rng.randrange(1000), rng.randrange(10**9)), rng.choice(severities))
            for template in rng.choices(owned[number], k=batch)
        ]
        yield services[number], lines


# ---- OTLP requests ----


def attribute(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


# Record attributes come from small sets of prebuilt values: copying a message is cheaper than building it.
THREADS = [(attribute("thread.id", 17 + n), attribute("thread.name", f"worker-{n}")) for n in range(24)]
LINE_NUMBERS = [attribute("code.lineno", 100 + n) for n in range(400)]


def pod_resource(service: str, pod: int) -> Resource:
    pod_name = f"{service}-7d9f8c6b5-{pod:05d}"
    return Resource(
        attributes=[
            attribute("service.name", service),
            attribute("service.namespace", "shop"),
            attribute("service.version", "2.4.1"),
            attribute("service.instance.id", random.Random(pod_name).randbytes(16).hex()),
            attribute("host.name", f"ip-10-0-{pod}-17.ec2.internal"),
            attribute("k8s.namespace.name", "production"),
            attribute("k8s.pod.name", pod_name),
            attribute("k8s.node.name", f"node-{pod % 2}"),
            attribute("k8s.deployment.name", service),
            attribute("deployment.environment.name", "production"),
            attribute("telemetry.sdk.name", "opentelemetry"),
            attribute("telemetry.sdk.language", "java"),
            attribute("telemetry.sdk.version", "1.44.1"),
        ]
    )


def build_request(
    service: str, pod: int, lines: list[Line], first_index: int, rng: random.Random, record_uid: bool = False
) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    resource_logs.resource.CopyFrom(pod_resource(service, pod))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = f"org.example.{service}"
    scope_logs.scope.version = "1.0.0"
    records = scope_logs.log_records
    namespace = attribute("code.namespace", f"org.example.{service}.Handler")
    for offset, line in enumerate(lines):
        index = first_index + offset
        timestamp = BASE_TIME_NS + index * 1_000_003
        record = LogRecord(
            time_unix_nano=timestamp,
            observed_time_unix_nano=timestamp + 41_000,
            severity_number=line.severity,  # type: ignore[arg-type]
            severity_text=SEVERITY_TEXTS[line.severity],
            body=AnyValue(string_value=line.body),
            attributes=[*THREADS[index % len(THREADS)], namespace, LINE_NUMBERS[index % len(LINE_NUMBERS)]],
        )
        if rng.random() < TRACED_SHARE:
            record.trace_id = rng.randbytes(16)
            record.span_id = rng.randbytes(8)
            record.flags = 1
        if record_uid:
            record.attributes.append(attribute("log.record.uid", rng.randbytes(16).hex()))
        records.append(record)
    return request


def batch_source(workload: Workload, rng: random.Random, patterns: int) -> BatchSource:
    if workload.source == "repetitive":
        return repetitive_batches(workload.batch, rng)
    if workload.source == "patterns":
        return pattern_batches(workload.batch, rng, patterns)
    return loghub_batches(workload.batch, rng)


def generate_pool(
    workload: Workload, records: int, *, patterns: int = 10_000, seed: int = 1, record_uid: bool = False
) -> tuple[list[tuple[int, bytes]], PoolInfo]:
    """(records in the request, serialised request) for about `records` records, and what the pool holds.

    `record_uid`: every record also carries `log.record.uid` (the semantic conventions' unique id), the
    attribute the Collector's probabilistic sampler hashes when it is the peer (--peer otelcol): 70% of
    records have no trace id, which that sampler would otherwise refuse to sample."""
    rng = random.Random(seed)
    source = batch_source(workload, rng, patterns)
    pool: list[tuple[int, bytes]] = []
    seen: dict[str, int] = {}
    shapes: set[bytes] = set()
    total = repeats = 0
    while total < records:
        service, lines = next(source)
        request = build_request(service, len(pool) % PODS_PER_SERVICE, lines, total, rng, record_uid)
        body = message_to_json(request) if workload.encoding == "json" else request.SerializeToString()
        pool.append((len(lines), body))
        total += len(lines)
        for line in lines:
            count = seen.get(line.body, 0)
            repeats += count > 0
            seen[line.body] = count + 1
            shapes.add(line.body.encode().translate(_DIGIT_SHAPE))
    unique = sum(1 for count in seen.values() if count == 1)
    info = PoolInfo(
        requests=len(pool),
        records=total,
        bytes=sum(len(body) for _, body in pool),
        unique_bodies=unique / total,
        repeated_bodies=repeats / total,
        distinct_shapes=len(shapes),
    )
    return pool, info


# ---- the pool file: (records u32, length u32, body) frames ----

_FRAME = struct.Struct("<II")


def write_pool(path: Path, pool: list[tuple[int, bytes]]) -> None:
    with path.open("wb") as handle:
        for records, body in pool:
            handle.write(_FRAME.pack(records, len(body)))
            handle.write(body)


def read_pool(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    pool: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if offset + _FRAME.size > len(data):
            raise ValueError(f"{path}: truncated frame header at byte {offset}")
        records, length = _FRAME.unpack_from(data, offset)
        offset += _FRAME.size
        if offset + length > len(data):
            raise ValueError(f"{path}: frame at byte {offset} wants {length} bytes, the file ends first")
        pool.append((records, data[offset : offset + length]))
        offset += length
    if not pool:
        raise ValueError(f"{path}: empty pool")
    return pool
